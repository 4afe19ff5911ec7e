package secrets

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/custos-pki/custos/kms"
)

// recordingKeys keeps a copy of every data key handed out, for the scan.
type recordingKeys struct {
	KeyManager
	mu  sync.Mutex
	dks [][]byte
}

func (r *recordingKeys) GenerateDataKey(ctx context.Context, name string, bits int, withPlaintext bool, o kms.CryptOptions) (kms.DataKey, error) {
	dk, err := r.KeyManager.GenerateDataKey(ctx, name, bits, withPlaintext, o)
	if err == nil {
		r.mu.Lock()
		r.dks = append(r.dks, bytes.Clone(dk.Plaintext))
		r.mu.Unlock()
	}
	return dk, err
}

// TestNoPlaintextOnDisk writes known values through every operation on a
// durable node, takes a snapshot, closes the node and scans every file it
// wrote (Raft log, state file, snapshots) for the values, the custom
// metadata and the data keys. Paths are storage keys, in the clear by
// design: finding one proves that the scan reads what was written.
func TestNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	e := newEnvIn(t, dir)
	rec := &recordingKeys{KeyManager: e.k}
	cfg := DefaultConfig()
	cfg.Storage, cfg.Keys, cfg.Clock = e.b, rec, e.clock
	s, err := New(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateMount(bg, "vault", MountOptions{MaxVersions: 2}); err != nil {
		t.Fatal(err)
	}
	var needles [][]byte
	value := func(i int) []byte {
		v := fmt.Appendf(nil, "correct horse battery staple #%03d", i)
		needles = append(needles, v)
		return v
	}
	control := "positive-control/path-in-the-clear"
	for i := range 6 {
		data := fmt.Appendf(nil, `{"password":%q}`, value(i))
		if _, err := s.Put(bg, "vault", control, data, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Patch(bg, "vault", control, fmt.Appendf(nil, `{"token":%q}`, value(100)), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	meta := value(200)
	if _, err := s.PutMetadata(bg, "vault", control, MetadataUpdate{CustomMetadata: map[string]string{"note": string(meta)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(bg, "vault", "to-move", fmt.Appendf(nil, `{"k":%q}`, value(300)), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(bg, "vault", "to-move", "moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(bg, "vault", "destroyed", fmt.Appendf(nil, `{"k":%q}`, value(400)), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Destroy(bg, "vault", "destroyed", 1); err != nil {
		t.Fatal(err)
	}
	needles = append(needles, rec.dks...)
	if err := e.raw.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := e.raw.Close(); err != nil {
		t.Fatal(err)
	}

	files, controlFound := 0, false
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		controlFound = controlFound || bytes.Contains(raw, []byte(control))
		for i, nd := range needles {
			if len(nd) < 16 {
				t.Fatalf("needle %d is too short to mean anything", i)
			}
			if bytes.Contains(raw, nd) {
				t.Errorf("needle %d (of %d bytes) found in %s", i, len(nd), filepath.Base(path))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 4 || !controlFound {
		t.Fatalf("scanned %d files, control found: %v: the scan does not see what was written", files, controlFound)
	}
	if len(rec.dks) < 9 {
		t.Fatalf("only %d data keys recorded", len(rec.dks))
	}
}
