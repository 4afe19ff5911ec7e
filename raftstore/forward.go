package raftstore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Requests a node sends to the leader over the cluster port. Each frame is
// uvarint(length) || kind(1) || body; each answer is one frame holding an
// encoded applyResult.
const (
	reqWrite       byte = 'W' // body: an encoded command
	reqReadIndex   byte = 'I' // body: empty; answer: Res.Index
	reqAddVoter    byte = 'A' // body: str(id) str(addr)
	reqRemove      byte = 'D' // body: str(id)
	reqAddNonvoter byte = 'N' // body: str(id) str(addr)
	reqPromote     byte = 'P' // body: the proof for Config.Admit
)

const maxFrame = 6 << 20

func writeFrame(w *bufio.Writer, kind byte, body []byte) error {
	var hdr [binary.MaxVarintLen64 + 1]byte
	n := binary.PutUvarint(hdr[:], uint64(len(body)+1))
	hdr[n] = kind
	if _, err := w.Write(hdr[:n+1]); err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Flush()
}

func readFrame(r *bufio.Reader) (byte, []byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, err
	}
	if n == 0 || n > maxFrame {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes", ErrMalformed, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

// forwarder carries requests from followers to the leader and serves them
// on the leader.
type forwarder struct {
	s *Store

	mu   sync.Mutex
	idle map[string][]*fwdConn // by address
	open map[net.Conn]struct{} // served connections, closed on shutdown
	done chan struct{}

	readIndexCalls atomic.Int64 // read-index requests sent, for tests
	dials          atomic.Int64 // connections dialed, for tests
}

type fwdConn struct {
	c  net.Conn
	id string
	r  *bufio.Reader
	w  *bufio.Writer
}

const maxIdlePerPeer = 32

func newForwarder(s *Store) *forwarder {
	return &forwarder{s: s, idle: map[string][]*fwdConn{}, open: map[net.Conn]struct{}{}, done: make(chan struct{})}
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
	for _, conns := range f.idle {
		for _, c := range conns {
			c.c.Close()
		}
	}
	f.idle = map[string][]*fwdConn{}
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
	if dl, ok := ctx.Deadline(); ok {
		_ = fc.c.SetDeadline(dl)
	} else {
		_ = fc.c.SetDeadline(time.Now().Add(f.s.cfg.ApplyTimeout))
	}
	if err := writeFrame(fc.w, kind, body); err != nil {
		fc.c.Close()
		return r, true, err
	}
	_, resp, err := readFrame(fc.r)
	if err != nil {
		fc.c.Close()
		return r, true, err
	}
	if r, err = decodeResult(resp); err != nil {
		fc.c.Close()
		return r, true, err
	}
	if errors.Is(r.Err, ErrClosed) {
		// The leader is shutting down, not this node: another leader
		// will take the request (a write carries its request ID, so it
		// is applied once however often it is sent).
		r.Err = fmt.Errorf("%w: the leader is shutting down", ErrNotLeader)
	}
	f.put(addr, fc)
	return r, true, nil
}

func (f *forwarder) get(ctx context.Context, addr, id string) (*fwdConn, error) {
	f.mu.Lock()
	conns := f.idle[addr]
	for len(conns) > 0 {
		fc := conns[len(conns)-1]
		conns = conns[:len(conns)-1]
		f.idle[addr] = conns
		if fc.id == id {
			f.mu.Unlock()
			return fc, nil
		}
		fc.c.Close()
	}
	f.mu.Unlock()
	f.dials.Add(1)
	c, err := f.s.mux.dialPeer(ctx, addr, id, connForward)
	if err != nil {
		return nil, err
	}
	return &fwdConn{c: c, id: id, r: bufio.NewReader(c), w: bufio.NewWriter(c)}, nil
}

func (f *forwarder) put(addr string, fc *fwdConn) {
	_ = fc.c.SetDeadline(time.Time{})
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
		fc.c.Close()
		return
	default:
	}
	if len(f.idle[addr]) >= maxIdlePerPeer {
		fc.c.Close()
		return
	}
	f.idle[addr] = append(f.idle[addr], fc)
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

func (f *forwarder) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		f.mu.Lock()
		delete(f.open, c)
		f.mu.Unlock()
	}()
	peer := peerID(c)
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		kind, body, err := readFrame(r)
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				_ = writeFrame(w, 0, encodeResult(applyResult{Err: err}))
			}
			return
		}
		res := f.handle(peer, kind, body)
		if err := writeFrame(w, 0, encodeResult(res)); err != nil {
			return
		}
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
