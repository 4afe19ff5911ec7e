package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// AddVoter adds the node id, reachable at addr, as a voter, or promotes it
// if it is a non-voter. It may be called on any node; followers forward it
// to the leader.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	return s.addServer(ctx, id, addr, true)
}

// AddNonvoter adds the node id as a non-voter: it receives the log but
// does not count towards the quorum, so a new node that never comes up
// cannot stall the cluster. Promote it with AddVoter once it has caught up.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	return s.addServer(ctx, id, addr, false)
}

func (s *Store) addServer(ctx context.Context, id, addr string, voter bool) error {
	if id == "" || len(id) > 128 || addr == "" || len(addr) > 256 {
		return fmt.Errorf("%w: server ID and address are required", ErrInvalidArgument)
	}
	kind := reqAddNonvoter
	if voter {
		kind = reqAddVoter
	}
	body := appendBytes(appendBytes(nil, []byte(id)), []byte(addr))
	return s.changeMembers(ctx, kind, body, func(ctx context.Context) error { return s.addServerLocal(ctx, id, addr, voter) })
}

// RemoveServer removes the node id from the cluster.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: server ID is required", ErrInvalidArgument)
	}
	return s.changeMembers(ctx, reqRemove, appendBytes(nil, []byte(id)), func(ctx context.Context) error { return s.removeLocal(ctx, id) })
}

// changeMembers runs a membership change on the leader. The changes are
// idempotent (adding a member twice, or removing one that is gone, does
// nothing), so a retry after a lost answer is safe.
func (s *Store) changeMembers(ctx context.Context, kind byte, body []byte, local func(context.Context) error) error {
	r, err := s.onLeader(ctx, leaderOp{kind: kind, body: body, local: func(ctx context.Context) (applyResult, error) {
		return applyResult{}, local(ctx)
	}})
	if err == nil {
		err = r.Err
	}
	return err
}

func raftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return err
}

// addServerLocal adds id at addr, or promotes it. It never moves a member to
// another address nor takes an address another member has: a node that
// comes back under the ID of a member must be removed first, or anyone with
// a join token could take over a voter's slot. With Config.Admit set, only
// Promote makes a voter.
func (s *Store) addServerLocal(ctx context.Context, id, addr string, voter bool) error {
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		switch {
		case string(srv.ID) == id && string(srv.Address) != addr:
			return fmt.Errorf("%w: %q is at %s; remove it first", ErrMemberExists, id, srv.Address)
		case string(srv.ID) != id && string(srv.Address) == addr:
			return fmt.Errorf("%w: %s is the address of %q", ErrMemberExists, addr, srv.ID)
		case string(srv.ID) == id && (srv.Suffrage == raft.Voter || !voter):
			return nil
		}
	}
	if !voter {
		return raftErr(s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)).Error())
	}
	if s.cfg.Admit != nil {
		return fmt.Errorf("%w: a voter is made only by Promote with a proof", ErrNotPermitted)
	}
	return raftErr(s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)).Error())
}

func (s *Store) removeLocal(ctx context.Context, id string) error {
	if !s.isMember(id) {
		return nil
	}
	return raftErr(s.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)).Error())
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return 10 * time.Second
}

// TransferLeadership hands leadership to another voter. Only the leader can.
func (s *Store) TransferLeadership() error {
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	return raftErr(s.raft.LeadershipTransfer().Error())
}

// Peer is one member of the cluster as this node sees it.
type Peer struct {
	ID     string `json:"id"`
	Addr   string `json:"address"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
	// LastContact is, on the leader, when the follower last answered:
	// recent unless heartbeats to it are failing. Zero elsewhere.
	LastContact time.Time `json:"last_contact,omitzero"`
	Healthy     bool      `json:"healthy"`
}

// Status describes this node and the cluster as it sees them.
type Status struct {
	ID string `json:"id"`
	// ClusterID names the cluster whose state this node holds.
	ClusterID    string `json:"cluster_id,omitempty"`
	Addr         string `json:"address"`
	State        string `json:"state"`
	LeaderID     string `json:"leader_id"`
	LeaderAddr   string `json:"leader_address"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	// LastLeaderContact is when a follower last heard from the leader.
	LastLeaderContact time.Time `json:"last_leader_contact,omitzero"`
	Peers             []Peer    `json:"peers"`
}

// Status reports this node's view of the cluster.
func (s *Store) Status() Status {
	leaderAddr, leaderID := s.raft.LeaderWithID()
	st := Status{
		ID: s.cfg.NodeID, Addr: s.cfg.AdvertiseAddr, ClusterID: s.fsm.clusterID(),
		State:    s.raft.State().String(),
		LeaderID: string(leaderID), LeaderAddr: string(leaderAddr),
		Term:         s.raft.CurrentTerm(),
		AppliedIndex: s.fsm.appliedIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		LastIndex:    s.raft.LastIndex(),
	}
	isLeader := s.raft.State() == raft.Leader
	if !isLeader {
		st.LastLeaderContact = s.raft.LastContact()
	}
	now := s.cfg.Now()
	s.contactMu.Lock()
	defer s.contactMu.Unlock()
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		p := Peer{ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leaderID}
		switch {
		case !isLeader:
		case p.ID == s.cfg.NodeID:
			p.LastContact, p.Healthy = now, true
		default:
			last, failing := s.failed[srv.ID]
			if !failing {
				last = now
			}
			p.LastContact, p.Healthy = last, !failing
		}
		st.Peers = append(st.Peers, p)
	}
	return st
}

// Snapshot takes a Raft snapshot now and compacts the log behind it.
func (s *Store) Snapshot() error {
	return raftErr(s.raft.Snapshot().Error())
}
