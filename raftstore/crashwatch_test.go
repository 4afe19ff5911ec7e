package raftstore

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// slowTimeouts waits until every node holds the whole log (a node that has
// not yet learnt of a member it was just joined with can elect no one), then
// gives every node heartbeat and election timeouts of 30 s, so that no
// election can come from them within the tests below.
func slowTimeouts(t *testing.T, c *testCluster) {
	t.Helper()
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	eventually(t, settle, func() error {
		for _, s := range c.live() {
			if s.AppliedIndex() != leader.AppliedIndex() {
				return errNotYet
			}
		}
		return nil
	})
	for _, s := range c.live() {
		rc := s.raft.ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = 30*time.Second, 30*time.Second
		if err := s.raft.ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
}

// A leader whose process died refuses connections on its cluster port; the
// followers call an election at once instead of waiting out their
// heartbeat timeouts, and afterwards go back to them.
func TestLeaderCrashStartsElectionAtOnce(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	slowTimeouts(t, c)
	old := c.waitLeader(settle)
	killed := time.Now()
	c.kill(old.ID())
	// Without the watch no follower calls an election for 30 s.
	leader := c.waitLeader(20 * time.Second)
	t.Logf("new leader %s after %v", leader.ID(), time.Since(killed).Round(time.Millisecond))
	eventually(t, settle, func() error {
		for _, s := range c.live() {
			if rc := s.raft.ReloadableConfig(); rc.HeartbeatTimeout != 30*time.Second || rc.ElectionTimeout != 30*time.Second {
				t.Logf("%s: heartbeat timeout %v, election timeout %v", s.ID(), rc.HeartbeatTimeout, rc.ElectionTimeout)
				return errNotYet
			}
		}
		return nil
	})
}

// A leader that is cut off, not dead, keeps its port open: the followers
// wait for it as long as their timeouts say.
func TestLeaderCutOffIsWaitedFor(t *testing.T) {
	c := newCluster(t, 3, fastTimeouts)
	slowTimeouts(t, c)
	old := c.waitLeader(settle)
	var rest []string
	for _, id := range c.ids {
		if id != old.ID() {
			rest = append(rest, id)
		}
	}
	c.net.partition([]string{old.ID()}, rest)
	// Twenty lease timeouts: ample time for the watch to act, were it to.
	time.Sleep(20 * old.cfg.LeaderLeaseTimeout)
	for _, id := range rest {
		s := c.node(id)
		if st := s.raft.State(); st != raft.Follower {
			t.Fatalf("%s is %v while the leader is only cut off", id, st)
		}
		if rc := s.raft.ReloadableConfig(); rc.HeartbeatTimeout != 30*time.Second {
			t.Fatalf("%s: heartbeat timeout %v, want 30s", id, rc.HeartbeatTimeout)
		}
	}
}
