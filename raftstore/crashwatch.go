package raftstore

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// watchLeaderCrash shortens the wait for a leader whose process is gone.
//
// A follower calls an election only when it has not heard from the leader
// for one to three heartbeat timeouts, and the other survivors vote only
// once their own timers have run out too. When the leader's process dies
// and its host stays up there is better evidence than silence: its cluster
// port refuses connections. A follower that has heard nothing for a leader
// lease timeout (five missed heartbeats) and finds the leader's port closed
// lowers its heartbeat and election timeouts to the lease timeout, so that
// Raft checks at once and calls the election now, and restores them once it
// knows a leader again. A leader that is slow or cut off (its port does not
// refuse) is waited for as before. Raft's safety never depends on timing:
// the evidence only decides when an election starts.
func (s *Store) watchLeaderCrash() {
	defer s.wg.Done()
	quick := s.cfg.LeaderLeaseTimeout
	if quick >= s.cfg.HeartbeatTimeout {
		return
	}
	var saved *raft.ReloadableConfig // the timeouts to restore, while lowered
	tick := time.NewTicker(s.cfg.HeartbeatTimeout / 10)
	defer tick.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-tick.C:
		}
		addr, _ := s.raft.LeaderWithID()
		state := s.raft.State()
		if saved != nil {
			if state == raft.Leader || (addr != "" && time.Since(s.raft.LastContact()) < quick) {
				if s.reloadTimeouts(saved.HeartbeatTimeout, saved.ElectionTimeout) {
					saved = nil
				}
			}
			continue
		}
		if state != raft.Follower || addr == "" || time.Since(s.raft.LastContact()) < quick {
			continue
		}
		if s.portClosed(string(addr)) {
			rc := s.raft.ReloadableConfig()
			if rc.HeartbeatTimeout <= quick {
				continue
			}
			s.logger.Warn("the leader's cluster port refuses connections; calling an election now", "leader", addr)
			if s.reloadTimeouts(quick, quick) {
				saved = &rc
			}
		}
	}
}

// reloadTimeouts sets Raft's heartbeat and election timeouts. A shorter
// heartbeat timeout makes a follower check for the leader at once.
func (s *Store) reloadTimeouts(heartbeat, election time.Duration) bool {
	rc := s.raft.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = heartbeat, election
	if err := s.raft.ReloadConfig(rc); err != nil {
		s.logger.Warn("setting the Raft timeouts", "heartbeat", heartbeat, "election", election, "error", err)
		return false
	}
	return true
}

// portClosed reports whether a connection to addr is refused: nothing
// listens there.
func (s *Store) portClosed(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaderLeaseTimeout)
	defer cancel()
	c, err := s.mux.dial(ctx, addr)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
