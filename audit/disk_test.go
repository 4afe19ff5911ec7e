package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// diskFile is a file on a disk that fills up and empties on demand: while
// full, a write stores what fits in room and fails with ENOSPC, and an
// fsync fails with ENOSPC when syncFull is set.
type diskFile struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	full     bool
	room     int
	syncFull bool
}

func (f *diskFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.full {
		n := min(f.room, len(p))
		f.buf.Write(p[:n])
		f.room -= n
		return n, syscall.ENOSPC
	}
	return f.buf.Write(p)
}

func (f *diskFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.syncFull {
		return syscall.ENOSPC
	}
	return nil
}

func (f *diskFile) Close() error { return nil }

func (f *diskFile) set(full bool, room int, syncFull bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.full, f.room, f.syncFull = full, room, syncFull
}

func (f *diskFile) lines(t *testing.T) []map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for i, l := range strings.Split(strings.TrimSuffix(f.buf.String(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			if i == 0 {
				t.Fatalf("line %d is not JSON: %q", i+1, l)
			}
			m = map[string]any{"broken": l}
		}
		out = append(out, m)
	}
	return out
}

// TestFullDiskThenRecovery fills the disk under the log: the entries that
// cannot be written fail and only those; an fsync that fails makes the
// next entries fail until one can be written and synced; when space comes
// back the log works again with no Reopen (no SIGHUP), and says which
// entries may have been lost.
func TestFullDiskThenRecovery(t *testing.T) {
	for _, interval := range []string{"sync-each", "sync-interval"} {
		t.Run(interval, func(t *testing.T) {
			disk := &diskFile{}
			cfg := newConfig(t)
			if interval == "sync-each" {
				cfg.SyncInterval = -1
			} else {
				cfg.SyncInterval = 1 << 62 // the test calls syncLocked itself
			}
			l, err := openWith(cfg, func(string) (file, error) { return disk, nil })
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			logID := func(id string) error { return l.Log(&Entry{Type: TypeRequest, RequestID: id}) }
			sync := func() {
				l.mu.Lock()
				l.syncLocked()
				l.mu.Unlock()
			}
			if err := logID("before"); err != nil {
				t.Fatal(err)
			}
			disk.set(true, 20, false)
			for _, id := range []string{"full-1", "full-2", "full-3"} {
				if err := logID(id); !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrUnavailable) {
					t.Fatalf("%s on a full disk: %v, want ENOSPC and ErrUnavailable", id, err)
				}
			}
			disk.set(false, 0, false)
			if err := logID("space-back"); err != nil {
				t.Fatalf("space came back, the log did not: %v", err)
			}

			// An fsync fails: entries since the last good one may be lost.
			disk.set(false, 0, true)
			if interval == "sync-each" {
				if err := logID("sync-fails"); !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("failed fsync: %v", err)
				}
			} else {
				if err := logID("unsynced"); err != nil {
					t.Fatal(err)
				}
				sync()
			}
			if err := logID("still-failing"); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("after a failed fsync, while fsync still fails: %v", err)
			}
			disk.set(false, 0, false)
			if err := logID("recovered"); err != nil {
				t.Fatalf("fsync works again, the log did not recover: %v", err)
			}
			if err := logID("after"); err != nil {
				t.Fatal(err)
			}
			sync()

			var ids, notices []string
			for _, m := range disk.lines(t) {
				if id, ok := m["request_id"].(string); ok {
					ids = append(ids, id)
				}
				if m["type"] == TypeNotice {
					notices = append(notices, m["notice"].(string))
				}
			}
			for _, id := range []string{"full-1", "full-2", "full-3"} {
				for _, got := range ids {
					if got == id {
						t.Errorf("entry %s was reported failed but is in the log", id)
					}
				}
			}
			last := ids[len(ids)-2:]
			if last[0] != "recovered" || last[1] != "after" || ids[0] != "before" {
				t.Errorf("entries in the log: %q", ids)
			}
			if len(notices) == 0 || !strings.Contains(notices[len(notices)-1], "may be lost") {
				t.Errorf("no notice of possibly lost entries: %q", notices)
			}
		})
	}
}

// TestFullTmpfs runs the log on a real, tiny tmpfs: filled up, entries
// fail with ENOSPC; emptied, the same Logger writes again. It needs root
// to mount; elsewhere it is skipped.
func TestFullTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	cfg := newConfig(t)
	cfg.Path = filepath.Join(dir, "audit.log")
	l := open(t, cfg)
	if err := l.Log(&Entry{Type: TypeRequest, RequestID: "before"}); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	_ = os.WriteFile(filler, make([]byte, 1<<20), 0o600) // fails part way: the disk is full
	failed := 0
	for range 100 { // more than the page the file has
		if err := l.Log(&Entry{Type: TypeRequest, RequestID: "full", Path: strings.Repeat("/p", 100)}); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("on a full tmpfs: %v", err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("no entry failed on a full disk")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := l.Log(&Entry{Type: TypeRequest, RequestID: "after"}); err != nil {
		t.Fatalf("space came back, the log did not: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLinesLenient(t, cfg.Path)
	if lines[0] != "before" || lines[len(lines)-1] != "after" {
		t.Fatalf("entries %q", lines)
	}
}

// readLinesLenient returns the request IDs of the file's whole JSON lines,
// skipping a line a full disk cut short.
func readLinesLenient(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			id, _ := m["request_id"].(string)
			ids = append(ids, id)
		}
	}
	return ids
}
