package raftstore

import (
	"context"
	"sync/atomic"
)

// A read session lets the linearizable reads of one request share one read
// index. The first read of the session on a store linearizes as any read
// does (a read index from the leader, taken after the call, and this node's
// state caught up to it); later reads of the session on that store read this
// node's state as it is, which has only moved forward since. Every read of
// the request therefore sees every write acknowledged before the request
// began, and each returns state that was current at some moment within the
// request: each read is linearizable with respect to the request's interval,
// though two reads of one request may see different states, as two requests
// would. A write of the session, through this node or any other, ends the
// sharing: the next read linearizes again, so a request reads its own
// writes.
//
// A session is for one request: a caller that outlives its requests (a
// background loop) must not carry one, or its reads would only see this
// node's state.
type readSession struct {
	store atomic.Pointer[Store] // the store it is bound to, on its first read
	gen   atomic.Uint64         // bumped by every write of the session
	// caughtUp is gen+1 of a generation in which a read linearized; 0 when
	// none has.
	caughtUp atomic.Uint64
}

type readSessionKey struct{}

// WithReadSession returns a context whose linearizable reads share one read
// index, as described above. An API server gives one to each request.
func WithReadSession(ctx context.Context) context.Context {
	return context.WithValue(ctx, readSessionKey{}, &readSession{})
}

// sessionOf returns ctx's read session if it is, or can be, bound to s.
func (s *Store) sessionOf(ctx context.Context) *readSession {
	rs, _ := ctx.Value(readSessionKey{}).(*readSession)
	if rs == nil {
		return nil
	}
	if b := rs.store.Load(); b == s || (b == nil && rs.store.CompareAndSwap(nil, s)) {
		return rs
	}
	return nil
}

// linearizeIn is linearize, skipped when a read of ctx's session on this
// store has linearized since the session's last write.
func (s *Store) linearizeIn(ctx context.Context) error {
	rs := s.sessionOf(ctx)
	if rs == nil {
		return s.linearize(ctx)
	}
	g := rs.gen.Load()
	if rs.caughtUp.Load() == g+1 {
		s.sessionReads.Add(1)
		return nil
	}
	if err := s.linearize(ctx); err != nil {
		return err
	}
	rs.caughtUp.Store(g + 1)
	return nil
}

// wrote ends the sharing of ctx's session, if any, after a write: the
// session's next read linearizes again.
func wrote(ctx context.Context) {
	if rs, _ := ctx.Value(readSessionKey{}).(*readSession); rs != nil {
		rs.gen.Add(1)
	}
}

// ReadCounts counts how this node's linearizable reads were answered since
// it started.
type ReadCounts struct {
	// ReadIndexRequests is the read-index requests this node sent to the
	// leader while a follower (concurrent reads share one).
	ReadIndexRequests int64
	// SessionReads is the reads answered within a read session without a
	// read index of their own.
	SessionReads int64
}

// ReadCounts reports how this node's linearizable reads were answered.
func (s *Store) ReadCounts() ReadCounts {
	return ReadCounts{ReadIndexRequests: s.fwd.readIndexCalls.Load(), SessionReads: s.sessionReads.Load()}
}
