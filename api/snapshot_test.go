package api

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/audit"
)

// snapNode streams snapshots of a given size.
type snapNode struct {
	testNode
	size     int64
	restored atomic.Int64
	force    atomic.Bool
}

func (n *snapNode) SnapshotSave(_ context.Context, w io.Writer) error {
	buf := make([]byte, 64<<10)
	for left := n.size; left > 0; left -= int64(len(buf)) {
		if _, err := w.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			return err
		}
	}
	return nil
}

func (n *snapNode) SnapshotRestore(_ context.Context, r io.Reader, force bool) error {
	got, err := io.Copy(io.Discard, r)
	n.restored.Store(got)
	n.force.Store(force)
	return err
}

// slowReader hands out its bytes, pausing before each 256 KiB.
type slowReader struct {
	left   int64
	pause  time.Duration
	credit int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.credit == 0 {
		time.Sleep(r.pause)
		r.credit = 256 << 10
	}
	n := int(min(int64(len(p)), r.left, int64(r.credit)))
	r.left -= int64(n)
	r.credit -= n
	return n, nil
}

// TestSnapshotsOutlastTheServerTimeouts moves snapshots that take several
// times the server's read and write timeouts: the handlers extend the
// connection's deadlines as bytes move.
func TestSnapshotsOutlastTheServerTimeouts(t *testing.T) {
	st := newTestStack(t, stackOptions{})
	lcfg := audit.DefaultConfig()
	lcfg.Path = filepath.Join(t.TempDir(), "audit.log")
	lcfg.HMACKey = make([]byte, 32)
	rand.Read(lcfg.HMACKey)
	al, err := audit.Open(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	const size = 32 << 20 // well past what the socket buffers hold
	n := &snapNode{testNode: testNode{svc: &Services{KMS: st.kms, Auth: st.auth, Audit: al}}, size: size}
	srv, err := New(Config{Node: n, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ReadTimeout, ts.Config.WriteTimeout = time.Second, time.Second
	ts.StartTLS()
	t.Cleanup(ts.Close)
	client := ts.Client()

	req, _ := http.NewRequest("GET", ts.URL+"/v1/sys/raft/snapshot", nil)
	req.Header.Set(TokenHeader, st.root)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	buf := make([]byte, 256<<10)
	start := time.Now()
	for {
		time.Sleep(25 * time.Millisecond) // 128 reads: over 3 s
		k, err := io.ReadFull(resp.Body, buf)
		got += int64(k)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break // a cut transfer is caught by the size below
		}
		if err != nil {
			t.Fatalf("download cut after %d bytes and %v: %v", got, time.Since(start), err)
		}
	}
	resp.Body.Close()
	if got != size {
		t.Fatalf("downloaded %d bytes, want %d", got, size)
	}

	req, _ = http.NewRequest("POST", ts.URL+"/v1/sys/raft/snapshot?force=true", &slowReader{left: size, pause: 25 * time.Millisecond})
	req.ContentLength = size
	req.Header.Set(TokenHeader, st.root)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || n.restored.Load() != size || !n.force.Load() {
		t.Fatalf("upload: %d, %d bytes restored (force %v)", resp.StatusCode, n.restored.Load(), n.force.Load())
	}
}
