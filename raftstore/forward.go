package raftstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Requests a node sends to the leader over the cluster port (see fwdconn.go
// for the framing). Each answer holds an encoded applyResult.
const (
	reqWrite       byte = 'W' // body: an encoded command
	reqReadIndex   byte = 'I' // body: empty; answer: Res.Index
	reqAddVoter    byte = 'A' // body: str(id) str(addr)
	reqRemove      byte = 'D' // body: str(id)
	reqAddNonvoter byte = 'N' // body: str(id) str(addr)
	reqPromote     byte = 'P' // body: the proof for Config.Admit
)

// maxServedPerConn bounds the requests of one connection served at once;
// past it the server stops reading until one is answered.
const maxServedPerConn = maxBatchCommands

// forwarder carries requests from followers to the leader and serves them
// on the leader. A node keeps one connection to each peer it forwards to
// and sends every request over it, however many are in flight.
type forwarder struct {
	s *Store

	mu      sync.Mutex
	conns   map[string]*fwdConn      // by address
	dialing map[string]chan struct{} // closed when the dial to the address ends
	open    map[net.Conn]struct{}    // served connections, closed on shutdown
	done    chan struct{}

	readIndexCalls atomic.Int64 // read-index requests sent, for tests
	dials          atomic.Int64 // connections dialed, for tests
}

func newForwarder(s *Store) *forwarder {
	return &forwarder{
		s: s, conns: map[string]*fwdConn{}, dialing: map[string]chan struct{}{},
		open: map[net.Conn]struct{}{}, done: make(chan struct{}),
	}
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
		return
	default:
	}
	close(f.done)
	for _, fc := range f.conns {
		fc.fail(ErrClosed)
	}
	f.conns = map[string]*fwdConn{}
	for c := range f.open {
		c.Close()
	}
}

// call sends one request to the node id at addr. sent reports whether the
// request may have reached it.
func (f *forwarder) call(ctx context.Context, addr, id string, kind byte, body []byte) (r applyResult, sent bool, err error) {
	fc, err := f.get(ctx, addr, id)
	if err != nil {
		return r, false, err
	}
	if kind == reqReadIndex {
		f.readIndexCalls.Add(1)
	}
	resp, sent, err := fc.roundTrip(ctx, kind, body)
	if err != nil {
		return r, sent, err
	}
	if r, err = decodeResult(resp); err != nil {
		fc.fail(err)
		return r, true, err
	}
	if errors.Is(r.Err, ErrClosed) {
		// The leader is shutting down, not this node: another leader
		// will take the request (a write carries its request ID, so it
		// is applied once however often it is sent).
		r.Err = fmt.Errorf("%w: the leader is shutting down", ErrNotLeader)
	}
	return r, true, nil
}

// get returns the connection to the node id at addr, dialing it if there
// is none; concurrent callers wait for one dial.
func (f *forwarder) get(ctx context.Context, addr, id string) (*fwdConn, error) {
	for {
		f.mu.Lock()
		select {
		case <-f.done:
			f.mu.Unlock()
			return nil, ErrClosed
		default:
		}
		if fc := f.conns[addr]; fc != nil {
			if fc.peer == id && !fc.failed() {
				f.mu.Unlock()
				return fc, nil
			}
			delete(f.conns, addr)
			fc.fail(fmt.Errorf("%w: %s is no longer %s", ErrNotLeader, addr, fc.peer))
		}
		if wait, ok := f.dialing[addr]; ok {
			f.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ErrTimeout
			}
		}
		wait := make(chan struct{})
		f.dialing[addr] = wait
		f.mu.Unlock()
		return f.dial(ctx, addr, id, wait)
	}
}

func (f *forwarder) dial(ctx context.Context, addr, id string, wait chan struct{}) (*fwdConn, error) {
	f.dials.Add(1)
	c, err := f.s.mux.dialPeer(ctx, addr, id, connForward)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.dialing, addr)
	close(wait)
	if err != nil {
		return nil, err
	}
	select {
	case <-f.done:
		c.Close()
		return nil, ErrClosed
	default:
	}
	fc := newFwdConn(c, id, f.s.cfg.ApplyTimeout)
	f.conns[addr] = fc
	go fc.readLoop(func() {
		f.mu.Lock()
		if f.conns[addr] == fc {
			delete(f.conns, addr)
		}
		f.mu.Unlock()
	})
	return fc, nil
}

// serve accepts forwarded requests until the store closes.
func (f *forwarder) serve() {
	defer f.s.wg.Done()
	ln := &chanListener{m: f.s.mux, ch: f.s.mux.forwardCh}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		select {
		case <-f.done:
			f.mu.Unlock()
			c.Close()
			return
		default:
		}
		f.open[c] = struct{}{}
		f.mu.Unlock()
		go f.serveConn(c)
	}
}

// serveConn serves the requests of one connection, each in its own
// goroutine, so that the writes of many clients of a follower join the
// leader's batches together.
func (f *forwarder) serveConn(c net.Conn) {
	w := newFrameWriter(c, f.s.cfg.ApplyTimeout)
	defer func() {
		w.stop()
		c.Close()
		f.mu.Lock()
		delete(f.open, c)
		f.mu.Unlock()
	}()
	peer := peerID(c)
	r := bufio.NewReader(c)
	slots := make(chan struct{}, maxServedPerConn)
	ctx := context.Background()
	for {
		req, err := readFrame(r)
		if err == nil && req.id == 0 {
			err = fmt.Errorf("%w: request ID 0", ErrMalformed)
		}
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				_ = w.send(ctx, frame{kind: ansResult, body: encodeResult(applyResult{Err: err}), last: true})
				<-w.done
			}
			return
		}
		select {
		case slots <- struct{}{}:
		case <-w.done:
			return
		}
		go func() {
			defer func() { <-slots }()
			res := f.handle(peer, req.kind, req.body)
			_ = w.send(ctx, frame{kind: ansResult, id: req.id, body: encodeResult(res)})
		}()
	}
}

// handle serves one request from peer. Deny by default: a peer that is not
// in the configuration may ask nothing; a non-voter may ask for a read index
// and for its own promotion, and may "create" a table that exists already
// (unseal does, and it changes nothing), but may not write: it has not yet
// proved that it holds the barrier keys (see Config.Admit).
func (f *forwarder) handle(peer string, kind byte, body []byte) applyResult {
	s := f.s
	suffrage, member := s.suffrage(peer)
	if !member {
		return applyResult{Err: fmt.Errorf("%w: %q is not a member of the cluster", ErrPeerIdentity, peer)}
	}
	voter := suffrage == raft.Voter
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
	defer cancel()
	var r applyResult
	switch kind {
	case reqWrite:
		c, err := decodeCommand(body)
		if err != nil {
			return applyResult{Err: err}
		}
		if !voter {
			return s.nonvoterWrite(c, peer)
		}
		r, err = s.applyLocal(ctx, c)
		if err != nil {
			r.Err = err
		}
	case reqReadIndex:
		r.Res.Index, r.Err = s.readIndexLocal(ctx)
	case reqPromote:
		if len(body) > maxProof {
			return applyResult{Err: fmt.Errorf("%w: proof of %d bytes", ErrMalformed, len(body))}
		}
		r.Err = s.promoteLocal(ctx, peer, body)
	case reqAddVoter, reqAddNonvoter, reqRemove:
		if !voter {
			return applyResult{Err: fmt.Errorf("%w: non-voter %q may not change the membership", ErrNotPermitted, peer)}
		}
		r.Err = f.membership(ctx, kind, body)
	default:
		r.Err = fmt.Errorf("%w: unknown request kind %d", ErrMalformed, kind)
	}
	return r
}

func (f *forwarder) membership(ctx context.Context, kind byte, body []byte) error {
	d := &decoder{b: body}
	id := d.bytes("id", 128)
	if kind == reqRemove {
		if d.err != nil {
			return d.err
		}
		return f.s.removeLocal(ctx, string(id))
	}
	addr := d.bytes("addr", 256)
	if d.err != nil {
		return d.err
	}
	return f.s.addServerLocal(ctx, string(id), string(addr), kind == reqAddVoter)
}

// nonvoterWrite answers a write from a non-voter: only creating a table that
// the leader already has succeeds, and it writes nothing.
func (s *Store) nonvoterWrite(c *command, peer string) applyResult {
	if c.Type == cmdCreateTable && len(c.Ops) == 1 {
		exists := false
		_ = s.fsm.view(func(tx *bolt.Tx) error {
			exists = tx.Bucket(tableBucket(c.Ops[0].Table)) != nil
			return nil
		})
		if exists {
			return applyResult{Res: TxnResult{Succeeded: true, FailedOp: -1}}
		}
	}
	return applyResult{Err: fmt.Errorf("%w: %q is a non-voter and may not write until it is promoted", ErrNotPermitted, peer)}
}
