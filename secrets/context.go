package secrets

import (
	"context"

	"github.com/custos-pki/custos/raftstore"
)

// Guard is a decision that allowed a write, made from this node's own
// state without confirming that the state is current (the API's
// authorisation of a request, decided from local reads). The write proves
// it at its commit point instead: its transaction carries the guard's
// compares, and commits only if the records the decision was made from
// are unchanged.
type Guard interface {
	// Ops are the compares (raftstore.OpCompare, over plaintext, through
	// the store's Storage) of the records the decision was made from.
	Ops() []raftstore.Op
	// Confirm decides again on current state, with a linearizable read,
	// and returns the error to answer if the write is no longer allowed.
	// When it returns nil this node's state is current and Ops holds the
	// guard of the new decision.
	Confirm(ctx context.Context) error
}

type guardKey struct{}

// WithGuard marks ctx as that of a write allowed by g, a decision from
// state not known to be current. The store's writes of one secret (Put,
// Patch, Delete, Undelete, Destroy, PutMetadata, DeleteMetadata) then
// read the mount and the secret from this node's state, without a
// linearizable read, and commit with g's compares, and the mount's, in
// their transaction. They never answer from unconfirmed state: when the
// guard fails, or before any error decided from state (no such mount or
// secret, a check-and-set mismatch, ...), they call g.Confirm, answer its
// error if it has one, and otherwise try again on current state. Move
// confirms g before it starts; other calls ignore it, and their callers
// must not set it.
//
// The guard travels in the context, as the read session does, because it
// belongs to the request rather than to a call, and the store, not
// raftstore below the barrier, attaches it: its compares are plaintexts
// that only the barrier turns into what is stored, and only the store
// knows which of its transactions' failures it may retry.
func WithGuard(ctx context.Context, g Guard) context.Context {
	return context.WithValue(ctx, guardKey{}, g)
}

func guardOf(ctx context.Context) Guard {
	g, _ := ctx.Value(guardKey{}).(Guard)
	return g
}
