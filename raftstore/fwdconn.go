package raftstore

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The forwarding protocol multiplexes requests over one connection per
// peer. Each frame is uvarint(length) || kind(1) || uvarint(id) || body,
// where length counts kind, id and body. A request's kind is one of the
// req* constants and its id is chosen by the sender, unique among the
// requests in flight on the connection; the answer repeats the id with kind
// ansResult and holds an encoded applyResult. Answers come in any order. An
// answer with id 0 reports a frame the server could not read; the server
// closes the connection after it.
const ansResult byte = 0

const maxFrame = 6 << 20

type frame struct {
	kind byte
	id   uint64
	body []byte
	last bool // close the connection once this frame is flushed
}

func writeFrame(w *bufio.Writer, f frame) error {
	// The header is built in the writer's free buffer (bufio allows
	// writing it back), so that it costs no allocation.
	idLen := uvarintLen(f.id)
	hdr := binary.AppendUvarint(w.AvailableBuffer(), uint64(1+idLen+len(f.body)))
	hdr = append(hdr, f.kind)
	hdr = binary.AppendUvarint(hdr, f.id)
	_, _ = w.Write(hdr)
	_, err := w.Write(f.body) // a bufio.Writer keeps the first error
	return err
}

// uvarintLen is the length of v's uvarint encoding.
func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

func readFrame(r *bufio.Reader) (frame, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return frame{}, err
	}
	if n < 2 || n > maxFrame {
		return frame{}, fmt.Errorf("%w: frame of %d bytes", ErrMalformed, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return frame{}, err
	}
	id, k := binary.Uvarint(buf[1:])
	if k <= 0 {
		return frame{}, fmt.Errorf("%w: frame ID", ErrMalformed)
	}
	return frame{kind: buf[0], id: id, body: buf[1+k:]}, nil
}

// frameWriter sends the frames of many goroutines over one connection. One
// goroutine writes them, and the frames that queue up while it writes go
// out together in its next flush: a burst of requests or answers costs one
// system call, not one each.
type frameWriter struct {
	c       net.Conn
	q       chan frame
	done    chan struct{} // closed when the writer stops
	once    sync.Once
	timeout time.Duration // for each flush
}

const (
	frameQueue     = 256
	coalesceBuffer = 64 << 10
)

func newFrameWriter(c net.Conn, timeout time.Duration) *frameWriter {
	fw := &frameWriter{c: c, q: make(chan frame, frameQueue), done: make(chan struct{}), timeout: timeout}
	go fw.run()
	return fw
}

func (fw *frameWriter) run() {
	w := bufio.NewWriterSize(fw.c, coalesceBuffer)
	for {
		var f frame
		select {
		case f = <-fw.q:
		case <-fw.done:
			return
		}
		// The deadline covers every write of the batch, including those
		// bufio makes before the flush when the buffer fills.
		_ = fw.c.SetWriteDeadline(time.Now().Add(fw.timeout))
		last := f.last
		err := writeFrame(w, f)
	more:
		for err == nil && !last && w.Buffered() < coalesceBuffer/2 {
			select {
			case f = <-fw.q:
				last = f.last
				err = writeFrame(w, f)
			default:
				break more
			}
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil || last {
			fw.stop()
			fw.c.Close()
			return
		}
	}
}

// stop ends the writer; frames still queued are dropped.
func (fw *frameWriter) stop() { fw.once.Do(func() { close(fw.done) }) }

// send queues f. An error means it was not queued: it never left.
func (fw *frameWriter) send(ctx context.Context, f frame) error {
	select {
	case fw.q <- f:
		return nil
	case <-fw.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ErrTimeout
	}
}

// fwdConn is a connection to one peer that carries many requests at once: a
// reader goroutine hands each answer to the request that waits for it.
type fwdConn struct {
	c        net.Conn
	peer     string // the node ID the peer authenticated as
	w        *frameWriter
	lastRead atomic.Int64 // when an answer last arrived, in Unix nanoseconds

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan answer
	err     error // why the connection failed; set once
}

type answer struct {
	body []byte
	err  error
}

func newFwdConn(c net.Conn, peer string, timeout time.Duration) *fwdConn {
	return &fwdConn{c: c, peer: peer, w: newFrameWriter(c, timeout), pending: map[uint64]chan answer{}}
}

// readLoop delivers answers until the connection fails, then calls gone.
func (fc *fwdConn) readLoop(gone func()) {
	defer gone()
	r := bufio.NewReader(fc.c)
	for {
		f, err := readFrame(r)
		if err == nil && (f.kind != ansResult || f.id == 0) {
			err = fmt.Errorf("%w: unexpected frame of kind %d from %s", ErrMalformed, f.kind, fc.peer)
			if res, derr := decodeResult(f.body); derr == nil && f.id == 0 && res.Err != nil {
				err = res.Err // the peer could not read a frame of ours
			}
		}
		if err != nil {
			fc.fail(err)
			return
		}
		fc.lastRead.Store(time.Now().UnixNano())
		fc.mu.Lock()
		ch := fc.pending[f.id]
		delete(fc.pending, f.id)
		fc.mu.Unlock()
		if ch != nil {
			ch <- answer{body: f.body}
		}
	}
}

// fail closes the connection and fails every request in flight on it.
func (fc *fwdConn) fail(err error) {
	fc.mu.Lock()
	if fc.err == nil {
		fc.err = err
		for id, ch := range fc.pending {
			ch <- answer{err: err}
			delete(fc.pending, id)
		}
	}
	fc.mu.Unlock()
	fc.w.stop()
	fc.c.Close()
}

func (fc *fwdConn) failed() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.err != nil
}

// roundTrip sends one request and waits for its answer. sent reports
// whether the request may have reached the peer.
func (fc *fwdConn) roundTrip(ctx context.Context, kind byte, body []byte) (resp []byte, sent bool, err error) {
	ch := make(chan answer, 1)
	fc.mu.Lock()
	if fc.err != nil {
		err := fc.err
		fc.mu.Unlock()
		return nil, false, err
	}
	fc.next++
	id := fc.next
	fc.pending[id] = ch
	fc.mu.Unlock()
	start := time.Now().UnixNano()
	if err := fc.w.send(ctx, frame{kind: kind, id: id, body: body}); err != nil {
		fc.forget(id)
		return nil, false, err
	}
	select {
	case a := <-ch:
		return a.body, true, a.err
	case <-ctx.Done():
		fc.forget(id)
		if fc.lastRead.Load() < start {
			// Nothing came back since this request left: the peer or
			// the path to it may be gone, and every request on this
			// connection with it. A new connection finds out.
			fc.fail(fmt.Errorf("%w: no answer from %s", ErrTimeout, fc.peer))
		}
		return nil, true, ErrTimeout
	}
}

func (fc *fwdConn) forget(id uint64) {
	fc.mu.Lock()
	delete(fc.pending, id)
	fc.mu.Unlock()
}
