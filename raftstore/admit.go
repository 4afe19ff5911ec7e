package raftstore

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
)

// Admission. A node joins as a non-voter: it receives the log but may not
// write (the forward port refuses it) and does not count towards a quorum.
// It becomes a voter only through Promote, whose proof the leader hands to
// Config.Admit; without Admit, Promote is refused and AddVoter is the only
// way in (tests, and callers that decide admission themselves).

// maxProof bounds what Promote carries.
const maxProof = 4096

// Promote asks the leader to make this node, now a non-voter, a voter. The
// leader passes proof to its Config.Admit and promotes the node only if
// Admit accepts it. Promoting a voter does nothing.
func (s *Store) Promote(ctx context.Context, proof []byte) error {
	if len(proof) == 0 || len(proof) > maxProof {
		return fmt.Errorf("%w: a proof of 1 to %d bytes is required", ErrInvalidArgument, maxProof)
	}
	return s.changeMembers(ctx, reqPromote, proof, func(ctx context.Context) error {
		return s.promoteLocal(ctx, s.cfg.NodeID, proof)
	})
}

// promoteLocal promotes the non-voter id on the leader once Admit accepts
// its proof. The peer's identity is its certificate's: a node can only
// promote itself.
func (s *Store) promoteLocal(ctx context.Context, id string, proof []byte) error {
	var cur *raft.Server
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if string(srv.ID) == id {
			cur = &srv
			break
		}
	}
	switch {
	case cur == nil:
		return fmt.Errorf("%w: %q is not a member", ErrNotPermitted, id)
	case cur.Suffrage == raft.Voter:
		return nil
	case s.cfg.Admit == nil:
		return fmt.Errorf("%w: this cluster admits voters only through AddVoter", ErrNotPermitted)
	}
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := s.cfg.Admit(ctx, id, proof); err != nil {
		return fmt.Errorf("%w: %q was not admitted: %v", ErrNotPermitted, id, err)
	}
	return raftErr(s.raft.AddVoter(cur.ID, cur.Address, 0, timeoutOf(ctx)).Error())
}

// suffrage returns id's suffrage in the latest configuration.
func (s *Store) suffrage(id string) (raft.ServerSuffrage, bool) {
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if string(srv.ID) == id {
			return srv.Suffrage, true
		}
	}
	return 0, false
}

// mayConnect reports whether a peer that authenticated as id may open a
// Raft or forwarding connection: only a server of the latest configuration
// may. A node with no configuration at all (it was just added and has not
// heard from the leader yet) has nothing to protect and takes any node of
// the cluster CA, or it could never receive its first entries.
//
// The configuration is this node's: a node that was down while a member
// joined does not know the new member until it hears of it from a member it
// knows. If the new member leads meanwhile, the stale node refuses it and
// stays behind until leadership moves (operator raft step-down on the new
// leader). Refusing unknown peers is the price of a removed node's
// certificate opening nothing.
func (s *Store) mayConnect(id string) bool {
	if s.raft == nil {
		return false
	}
	servers := s.raft.GetConfiguration().Configuration().Servers
	if len(servers) == 0 {
		return true
	}
	for _, srv := range servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}
