package raftstore

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// sampleState makes a state file as the store writes it: its own buckets
// with an applied index, a table of random keys written one transaction
// at a time (which leaves half-empty pages), a table of ordered keys, an
// empty value, a value larger than the reader's buffer, a nested bucket
// and an empty bucket.
func sampleState(t testing.TB, randomKeys int) *bolt.DB {
	t.Helper()
	db, err := openBolt(filepath.Join(t.TempDir(), "sample.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := initState(db); err != nil {
		t.Fatal(err)
	}
	update := func(fn func(tx *bolt.Tx) error) {
		t.Helper()
		if err := db.Update(fn); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(appliedKey, binary.BigEndian.AppendUint64(nil, 4242)); err != nil {
			return err
		}
		if err := meta.Put(clusterIDKey, []byte("0123456789abcdef")); err != nil {
			return err
		}
		for _, name := range []string{"random", "ordered", "empty"} {
			if _, err := tx.CreateBucket(tableBucket(name)); err != nil {
				return err
			}
		}
		ordered := tx.Bucket(tableBucket("ordered"))
		for i := range 500 {
			if err := ordered.Put(fmt.Appendf(nil, "exp/%016x", i), []byte{}); err != nil {
				return err
			}
		}
		if err := ordered.Put([]byte("large"), bytes.Repeat([]byte("L"), 200<<10)); err != nil {
			return err
		}
		inner, err := ordered.CreateBucket([]byte("inner"))
		if err != nil {
			return err
		}
		return inner.Put([]byte("k"), []byte("nested value"))
	})
	for range randomKeys {
		k, v := make([]byte, 20), make([]byte, 100)
		rand.Read(k)
		rand.Read(v)
		update(func(tx *bolt.Tx) error { return tx.Bucket(tableBucket("random")).Put(k, v) })
	}
	return db
}

// dump returns every bucket and key of db: bucket paths as "b:" entries,
// keys as "k:" entries with their bucket path, to their values.
func dump(t testing.TB, db *bolt.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(path string, b *bolt.Bucket) error
	walk = func(path string, b *bolt.Bucket) error {
		out["b:"+path] = ""
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if inner := b.Bucket(k); inner != nil {
					return walk(path+"\x00"+string(k), inner)
				}
			}
			out["k:"+path+"\x00"+string(k)] = string(v)
			return nil
		})
	}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshotOf returns db's state in the compact form, or, with old set, as
// the whole bbolt file (the form snapshots had before).
func snapshotOf(t testing.TB, db *bolt.DB, old bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := db.View(func(tx *bolt.Tx) error {
		if old {
			_, err := tx.WriteTo(&buf)
			return err
		}
		return writeCompact(&buf, tx)
	}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func usedBytes(t testing.TB, db *bolt.DB) int64 {
	t.Helper()
	var n int64
	if err := db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCompactSnapshotRoundTrip(t *testing.T) {
	db := sampleState(t, 3000)
	snap := snapshotOf(t, db, false)
	if !isCompact(snap) {
		t.Fatalf("a snapshot opens with %q", snap[:16])
	}
	path := filepath.Join(t.TempDir(), "state.db")
	if err := writeStateFile(path, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	back, err := openBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if want, got := dump(t, db), dump(t, back); !maps.Equal(want, got) {
		t.Fatalf("the restored state differs: %d entries, want %d", len(got), len(want))
	}
	// The snapshot holds no free or half-empty pages, and the state file
	// made from it is filled.
	used, restored := usedBytes(t, db), usedBytes(t, back)
	t.Logf("state file %d B, snapshot %d B, restored state file %d B", used, len(snap), restored)
	if int64(len(snap)) > used/2 || restored >= used {
		t.Fatalf("state file %d B, snapshot %d B, restored state file %d B: not compact", used, len(snap), restored)
	}
}

// TestRestoreReadsBothSnapshotForms restores a snapshot in the compact form
// and one in the form written before it (the whole bbolt file), which the
// snapshot stores of existing clusters hold.
func TestRestoreReadsBothSnapshotForms(t *testing.T) {
	db := sampleState(t, 200)
	want := dump(t, db)
	for _, tc := range []struct {
		name string
		old  bool
	}{{"compact", false}, {"bbolt file", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := newFSM(filepath.Join(t.TempDir(), "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.close(true)
			if err := f.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, db, tc.old)))); err != nil {
				t.Fatal(err)
			}
			if f.appliedIndex() != 4242 || f.clusterID() != "0123456789abcdef" {
				t.Fatalf("restored applied index %d, cluster %q", f.appliedIndex(), f.clusterID())
			}
			if got := dump(t, f.db); !maps.Equal(want, got) {
				t.Fatalf("the restored state differs: %d entries, want %d", len(got), len(want))
			}
		})
	}
}

// TestRestoreRefusesDamagedSnapshots feeds Restore compact snapshots that
// are cut short, damaged or of an unknown version: each is refused, and
// the state is left as it was.
func TestRestoreRefusesDamagedSnapshots(t *testing.T) {
	snap := snapshotOf(t, sampleState(t, 50), false)
	flipped := bytes.Clone(snap)
	flipped[len(flipped)/2] ^= 0x40
	version := bytes.Clone(snap)
	version[len(snapMagic)] = snapVersion + 1
	zipped := func(records []byte) []byte {
		var buf bytes.Buffer
		buf.WriteString(snapMagic)
		buf.WriteByte(snapVersion)
		zw := gzip.NewWriter(&buf)
		zw.Write(records)
		zw.Close()
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		snap []byte
	}{
		{"magic only", snap[:len(snapMagic)+1]},
		{"cut in the gzip header", snap[:len(snapMagic)+5]},
		{"cut in the middle", snap[:len(snap)/2]},
		{"cut before the gzip trailer", snap[:len(snap)-4]},
		{"a flipped bit", flipped},
		{"unknown version", version},
		{"data after the gzip stream", append(bytes.Clone(snap), "trailing"...)},
		{"no end record", zipped([]byte{recBucket, 3, 'a', 'b', 'c', recClose})},
		{"counts that do not match", zipped([]byte{recBucket, 3, 'a', 'b', 'c', recClose, recEnd, 1, 1})},
		{"a key outside any bucket", zipped([]byte{recPair, 1, 'k', 1, 'v', recEnd, 0, 1})},
		{"an unclosed bucket", zipped([]byte{recBucket, 1, 'a', recEnd, 1, 0})},
		{"an empty key", zipped([]byte{recBucket, 1, 'a', recPair, 0, 1, 'v', recClose, recEnd, 1, 1})},
		{"a length past the limit", zipped([]byte{recBucket, 0xff, 0xff, 0xff, 0xff, 0x0f})},
		{"records after the end", zipped([]byte{recEnd, 0, 0, recEnd, 0, 0})},
		{"unknown record", zipped([]byte{0x7f})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := newFSM(filepath.Join(t.TempDir(), "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.close(true)
			before := dump(t, f.db)
			err = f.Restore(io.NopCloser(bytes.NewReader(tc.snap)))
			if err == nil {
				t.Fatal("restored")
			}
			if got := dump(t, f.db); !maps.Equal(before, got) {
				t.Fatalf("a refused snapshot changed the state: %v", err)
			}
			if !errors.Is(err, errSnapshot) {
				t.Fatalf("error %v is not a snapshot error", err)
			}
		})
	}
}

// FuzzSnapshot feeds the reader of compact snapshots, which sees bytes
// from disk and from peers. The input is the record stream; the fuzzer
// also gets to send it without the gzip layer (first byte odd). What
// reads must write back to the same state.
func FuzzSnapshot(f *testing.F) {
	records := func(db *bolt.DB) []byte {
		snap := snapshotOf(f, db, false)
		zr, err := gzip.NewReader(bytes.NewReader(snap[len(snapMagic)+1:]))
		if err != nil {
			f.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			f.Fatal(err)
		}
		return raw
	}
	small, err := openBolt(filepath.Join(f.TempDir(), "small.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer small.Close()
	if err := initState(small); err != nil {
		f.Fatal(err)
	}
	if err := small.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(tableBucket("kv"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		inner, err := b.CreateBucket([]byte("in"))
		if err != nil {
			return err
		}
		return inner.Put([]byte("x"), nil)
	}); err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte{0}, records(small)...))
	f.Add([]byte{0, recEnd, 0, 0})
	f.Add([]byte{0, recBucket, 1, 'a', recBucket, 1, 'b', recPair, 1, 'k', 0, recClose, recClose, recEnd, 2, 1})
	f.Add([]byte{0, recBucket, 1, 'a', recPair, 1, 'k', 1, 'v', recPair, 1, 'k', 1, 'w', recClose, recEnd, 1, 2})
	f.Add([]byte{0, recBucket, 1, 'a', recClose, recBucket, 1, 'a', recClose, recEnd, 2, 0})
	f.Add([]byte{1, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		var in bytes.Buffer
		in.WriteString(snapMagic)
		in.WriteByte(snapVersion)
		if data[0]%2 == 0 {
			zw, _ := gzip.NewWriterLevel(&in, gzip.BestSpeed)
			zw.Write(data[1:])
			zw.Close()
		} else {
			in.Write(data[1:])
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "state.db")
		if err := writeStateFile(path, &in); err != nil {
			if !errors.Is(err, errSnapshot) {
				t.Fatalf("not a snapshot error: %v", err)
			}
			return
		}
		db, err := openBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		want := dump(t, db)
		again := filepath.Join(dir, "again.db")
		if err := writeStateFile(again, bytes.NewReader(snapshotOf(t, db, false))); err != nil {
			t.Fatalf("what was read does not read back: %v", err)
		}
		db2, err := openBolt(again)
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close()
		if got := dump(t, db2); !maps.Equal(want, got) {
			t.Fatalf("what was read reads back as another state")
		}
	})
}

// TestCrashedNodeRestoresAnOldFormSnapshot: a node whose snapshot store
// holds a snapshot of the form before the compact one (as a node upgraded
// from an earlier version does) rebuilds its state from it after a crash.
func TestCrashedNodeRestoresAnOldFormSnapshot(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) {
		fastTimeouts(cfg)
		cfg.SnapshotInterval = time.Hour // snapshots are taken by hand below
	})
	s := c.node("node1")
	mustCreateTable(t, s, "kv")
	for i := range 50 {
		if err := s.Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%02d", i), fmt.Appendf(nil, "v%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	metas, err := s.snapshots.List()
	if err != nil || len(metas) != 1 {
		t.Fatalf("%d snapshots, %v", len(metas), err)
	}
	meta := metas[0]
	_, rc, err := s.snapshots.Open(meta.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The same state as a whole bbolt file.
	path := filepath.Join(t.TempDir(), "state.db")
	err = writeStateFile(path, rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c.kill("node1")

	store, err := raft.NewFileSnapshotStoreWithLogger(c.dirs["node1"], 1, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("") // encodes peers as the TCP transport does
	sink, err := store.Create(meta.Version, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(old); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if metas, err := store.List(); err != nil || len(metas) != 1 || metas[0].ID != sink.ID() {
		t.Fatalf("the snapshot store holds %v (%v), want only the old-form snapshot %s", metas, err, sink.ID())
	}

	back := c.start("node1", nil)
	if back.fsm.restores.Load() != 1 {
		t.Fatal("the state was not rebuilt from the old-form snapshot")
	}
	c.waitLeader(settle)
	for i := range 50 {
		v, err := back.Get(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%02d", i))
		if err != nil || string(v) != fmt.Sprintf("v%02d", i) {
			t.Fatalf("k%02d after the restore: %q, %v", i, v, err)
		}
	}
}

// TestRestoreTakesACompactSnapshot: Restore takes a snapshot in the
// compact form as well as a backup, and refuses a damaged one as invalid
// input without changing the state.
func TestRestoreTakesACompactSnapshot(t *testing.T) {
	c := newCluster(t, 1, fastTimeouts)
	s := c.node("node1")
	mustCreateTable(t, s, "kv")
	if err := s.Put(ctxT(t, settle), "kv", []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	var backup bytes.Buffer
	if _, err := s.Backup(ctxT(t, settle), &backup); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, backup.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := openBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	compact := snapshotOf(t, db, false)
	db.Close()
	if err := s.Put(ctxT(t, settle), "kv", []byte("a"), []byte("2")); err != nil {
		t.Fatal(err)
	}

	err = s.Restore(ctxT(t, settle), bytes.NewReader(compact[:len(compact)-10]), false)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("restore of a cut snapshot: %v", err)
	}
	if v, err := s.Get(ctxT(t, settle), "kv", []byte("a")); err != nil || string(v) != "2" {
		t.Fatalf("a refused restore changed the state: %q, %v", v, err)
	}
	if err := s.Restore(ctxT(t, settle), bytes.NewReader(compact), false); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctxT(t, settle), "kv", []byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("after the restore: %q, %v", v, err)
	}
}

// BenchmarkSnapshot writes the snapshot of a state file of 20,000 random
// keys in the compact form and, for comparison, as the whole file (the
// form before), and reports its size.
func BenchmarkSnapshot(b *testing.B) {
	db := sampleState(b, 20000)
	for _, form := range []struct {
		name string
		old  bool
	}{{"compact", false}, {"file", true}} {
		b.Run(form.name, func(b *testing.B) {
			var n int64
			for b.Loop() {
				cw := &countingWriter{}
				if err := db.View(func(tx *bolt.Tx) error {
					if form.old {
						_, err := tx.WriteTo(cw)
						return err
					}
					return writeCompact(cw, tx)
				}); err != nil {
					b.Fatal(err)
				}
				n = cw.n
			}
			b.ReportMetric(float64(n), "snapshot-bytes")
		})
	}
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}
