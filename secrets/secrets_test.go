package secrets

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

func TestMounts(t *testing.T) {
	e := newEnv(t)
	info, err := e.s.CreateMount(bg, "apps", MountOptions{MaxVersions: 5, CASRequired: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "_secrets-apps" || info.MaxVersions != 5 || !info.CASRequired || info.Created.IsZero() {
		t.Fatalf("mount info: %+v", info)
	}
	ki, err := e.k.Key(bg, "_secrets-apps")
	if err != nil || ki.Type != kms.DefaultKeyType {
		t.Fatalf("mount key: %+v %v", ki, err)
	}
	_, err = e.s.CreateMount(bg, "apps", MountOptions{})
	wantErr(t, err, ErrMountExists)
	wantErr(t, err, kms.ErrConflict)
	for _, bad := range []string{"", "_x", "-x", "a/b", "a.b", "a b", string(make([]byte, 65))} {
		_, err := e.s.CreateMount(bg, bad, MountOptions{})
		wantErr(t, err, ErrInvalidMount)
	}
	_, err = e.s.CreateMount(bg, "x", MountOptions{MaxVersions: MaxVersionsLimit + 1})
	wantErr(t, err, kms.ErrInvalid)
	_, err = e.s.CreateMount(bg, "x", MountOptions{DeleteVersionAfter: -time.Second})
	wantErr(t, err, kms.ErrInvalid)

	e.mount(t, "db", MountOptions{})
	ms, err := e.s.ListMounts(bg)
	if err != nil || len(ms) != 2 || ms[0].Name != "apps" || ms[1].Name != "db" {
		t.Fatalf("list: %+v %v", ms, err)
	}
	up, err := e.s.UpdateMount(bg, "apps", MountUpdate{CASRequired: new(bool)})
	if err != nil || up.CASRequired || up.MaxVersions != 5 {
		t.Fatalf("update: %+v %v", up, err)
	}
	_, err = e.s.Mount(bg, "nope")
	wantErr(t, err, ErrMountNotFound)

	// Deleting a mount that holds a secret needs force, and leaves it working.
	e.put(t, "db", "pw", `{"p":"one"}`)
	wantErr(t, e.s.DeleteMount(bg, "db", false), ErrMountNotEmpty)
	e.put(t, "db", "pw", `{"p":"two"}`)
	if got := e.get(t, "db", "pw", 0); got != `{"p":"two"}` {
		t.Fatal(got)
	}
	if err := e.s.DeleteMount(bg, "db", true); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Get(bg, "db", "pw", 0)
	wantErr(t, err, ErrMountNotFound)
	if n := e.count(t, tableMeta) + e.count(t, tableData); n != 0 {
		t.Fatalf("%d records left after deleting the mount", n)
	}
	ki, _ = e.k.Key(bg, "_secrets-db")
	if ki.DeletionDate.IsZero() {
		t.Fatal("the deleted mount's key is not scheduled for deletion")
	}
	// Created again: empty, with the key kept.
	e.mount(t, "db", MountOptions{})
	_, err = e.s.Get(bg, "db", "pw", 0)
	wantErr(t, err, ErrNotFound)
	e.put(t, "db", "pw", `{"p":"three"}`)
	if ki, _ = e.k.Key(bg, "_secrets-db"); !ki.DeletionDate.IsZero() {
		t.Fatal("the key of a re-created mount is still scheduled for deletion")
	}
	// An empty mount is deleted without force.
	if err := e.s.DeleteMount(bg, "apps", false); err != nil {
		t.Fatal(err)
	}
}

func TestDeletingMountStopsWrites(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	e.put(t, "m", "a", `{}`)
	m, raw, err := e.s.readMount(bg, "m")
	if err != nil {
		t.Fatal(err)
	}
	// Half-deleted, as DeleteMount leaves it if interrupted: marked, live
	// marker gone, records still there.
	d := *m
	d.Deleting = true
	if ok, err := e.s.swapMount(bg, "m", &d, raw, raftstore.Op{Kind: raftstore.OpDelete, Table: tableLive, Key: []byte(m.ID)}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	_, err = e.s.Put(bg, "m", "b", []byte(`{}`), WriteOptions{})
	wantErr(t, err, ErrMountDeleting)
	_, err = e.s.Get(bg, "m", "a", 0)
	wantErr(t, err, ErrMountDeleting)
	_, err = e.s.CreateMount(bg, "m", MountOptions{})
	wantErr(t, err, ErrMountExists)
	wantErr(t, e.s.DeleteMount(bg, "m", false), ErrMountDeleting)
	// A write that read the mount before it was marked fails in its
	// transaction, on the live marker.
	res, err := e.b.Txn(bg, []raftstore.Op{liveOp(m), {Kind: raftstore.OpPut, Table: tableMeta, Key: metaKey(m.ID, "late"), Value: []byte(`{}`)}})
	if err != nil || res.Succeeded || res.FailedOp != 0 {
		t.Fatalf("late write: %+v %v", res, err)
	}
	if err := e.s.DeleteMount(bg, "m", true); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, tableMeta) + e.count(t, tableData) + e.count(t, tableMounts); n != 0 {
		t.Fatalf("%d records left", n)
	}
}

func TestPutGetVersions(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	v1 := e.put(t, "m", "app/db", ` { "user" : "admin", "n": 12345678901234567890 } `)
	if v1.Version != 1 || v1.Created.IsZero() || v1.Deleted || v1.Destroyed {
		t.Fatalf("v1: %+v", v1)
	}
	e.clock.Add(time.Minute)
	if v := e.put(t, "m", "app/db", `{"user":"root"}`); v.Version != 2 {
		t.Fatalf("v2: %+v", v)
	}
	if got := e.get(t, "m", "app/db", 1); got != `{"user":"admin","n":12345678901234567890}` {
		t.Fatalf("v1 data: %s", got)
	}
	sec, err := e.s.Get(bg, "m", "app/db", 0)
	if err != nil || string(sec.Data) != `{"user":"root"}` || sec.Version != 2 || !sec.Created.Equal(e.clock.Now()) {
		t.Fatalf("current: %+v %v", sec, err)
	}
	_, err = e.s.Get(bg, "m", "app/db", 3)
	wantErr(t, err, ErrVersionNotFound)
	_, err = e.s.Get(bg, "m", "app/nope", 0)
	wantErr(t, err, ErrNotFound)
	_, err = e.s.Get(bg, "m", "app/db", -1)
	wantErr(t, err, kms.ErrInvalid)
	_, err = e.s.Get(bg, "nope", "app/db", 0)
	wantErr(t, err, ErrMountNotFound)

	// Check-and-set.
	cas := func(path string, n int, data string) error {
		_, err := e.s.Put(bg, "m", path, []byte(data), WriteOptions{CAS: intp(n)})
		return err
	}
	if err := cas("new", 0, `{"a":1}`); err != nil {
		t.Fatal(err)
	}
	wantErr(t, cas("new", 0, `{"a":2}`), ErrCASMismatch)
	wantErr(t, cas("new", 5, `{"a":2}`), ErrCASMismatch)
	if err := cas("new", 1, `{"a":2}`); err != nil {
		t.Fatal(err)
	}
	// cas_required on the mount, then on the secret alone.
	e.mount(t, "strict", MountOptions{CASRequired: true})
	_, err = e.s.Put(bg, "strict", "x", []byte(`{}`), WriteOptions{})
	wantErr(t, err, ErrCASRequired)
	if _, err := e.s.PutMetadata(bg, "m", "guarded", MetadataUpdate{CASRequired: new(true)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Put(bg, "m", "guarded", []byte(`{}`), WriteOptions{})
	wantErr(t, err, ErrCASRequired)
	if err := cas("guarded", 0, `{"ok":true}`); err != nil {
		t.Fatal(err)
	}
}

func TestEachVersionHasItsOwnDataKey(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	e.put(t, "m", "a", `{"same":"value"}`)
	e.put(t, "m", "a", `{"same":"value"}`)
	m, _, _ := e.s.readMount(bg, "m")
	rec, _, err := e.s.readRecord(bg, m, "a")
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := rec.Versions[0].Key, rec.Versions[1].Key
	if len(k1) == 0 || slices.Equal(k1, k2) {
		t.Fatal("two versions share a wrapped data key")
	}
	// The wrapped key is bound to its path and version.
	if _, err := e.k.Decrypt(bg, m.Key, k1, kms.CryptOptions{AD: keyAD(m.ID, "a", rec.ID, 1)}); err != nil {
		t.Fatal(err)
	}
	for _, ad := range [][]byte{keyAD(m.ID, "b", rec.ID, 1), keyAD(m.ID, "a", rec.ID, 2), keyAD("other", "a", rec.ID, 1)} {
		if _, err := e.k.Decrypt(bg, m.Key, k1, kms.CryptOptions{AD: ad}); !errors.Is(err, kms.ErrDecrypt) {
			t.Fatalf("data key opened under other associated data: %v", err)
		}
	}
	// A value swapped between versions does not open.
	sealed1, _ := e.b.Get(bg, tableData, dataKey(m.ID, rec.ID, 1))
	if _, err := e.s.open(bg, m, "a", rec, &rec.Versions[1], sealed1); !errors.Is(err, kms.ErrCorrupt) {
		t.Fatalf("version 1's value opened as version 2: %v", err)
	}
}

func TestPatch(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	e.put(t, "m", "p", `{"a":"b","c":{"d":"e","f":"g"},"keep":[1,2]}`)
	v, err := e.s.Patch(bg, "m", "p", []byte(`{"a":"z","c":{"f":null,"h":"<i>"},"new":1}`), WriteOptions{})
	if err != nil || v.Version != 2 {
		t.Fatalf("patch: %+v %v", v, err)
	}
	var got, want map[string]any
	json.Unmarshal([]byte(e.get(t, "m", "p", 0)), &got)
	json.Unmarshal([]byte(`{"a":"z","c":{"d":"e","h":"<i>"},"keep":[1,2],"new":1}`), &want)
	if g, _ := json.Marshal(got); string(g) != mustJSON(want) {
		t.Fatalf("patched: %s", g)
	}
	_, err = e.s.Patch(bg, "m", "p", []byte(`{"x":1}`), WriteOptions{CAS: intp(1)})
	wantErr(t, err, ErrCASMismatch)
	if _, err := e.s.Patch(bg, "m", "p", []byte(`{"x":1}`), WriteOptions{CAS: intp(2)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Patch(bg, "m", "missing", []byte(`{"x":1}`), WriteOptions{})
	wantErr(t, err, ErrNotFound)
	_, err = e.s.Patch(bg, "m", "p", []byte(`[1]`), WriteOptions{})
	wantErr(t, err, ErrInvalidValue)
	if err := e.s.Delete(bg, "m", "p"); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Patch(bg, "m", "p", []byte(`{"x":2}`), WriteOptions{})
	wantErr(t, err, ErrVersionDeleted)
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestDeleteUndeleteDestroy(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	for _, d := range []string{`{"v":1}`, `{"v":2}`, `{"v":3}`} {
		e.put(t, "m", "s", d)
	}
	// Soft delete: the current version by default.
	if err := e.s.Delete(bg, "m", "s"); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.Get(bg, "m", "s", 0)
	wantErr(t, err, ErrVersionDeleted)
	if got := e.get(t, "m", "s", 2); got != `{"v":2}` {
		t.Fatal(got)
	}
	if err := e.s.Delete(bg, "m", "s", 1, 2); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.s.Delete(bg, "m", "s", 4), ErrVersionNotFound)
	wantErr(t, e.s.Delete(bg, "m", "nope"), ErrNotFound)
	wantErr(t, e.s.Undelete(bg, "m", "s"), kms.ErrInvalid)
	if err := e.s.Undelete(bg, "m", "s", 1, 3); err != nil {
		t.Fatal(err)
	}
	if got := e.get(t, "m", "s", 0); got != `{"v":3}` {
		t.Fatal(got)
	}
	_, err = e.s.Get(bg, "m", "s", 2)
	wantErr(t, err, ErrVersionDeleted)

	// Destroy: the data is gone from storage; the metadata stays.
	m, _, _ := e.s.readMount(bg, "m")
	rec, _, _ := e.s.readRecord(bg, m, "s")
	if err := e.s.Destroy(bg, "m", "s", 2, 3); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 3} {
		_, err = e.s.Get(bg, "m", "s", n)
		wantErr(t, err, ErrVersionDestroyed)
		if _, err := e.raw.Get(bg, tableData, dataKey(m.ID, rec.ID, n)); err == nil {
			t.Fatalf("version %d's data is still stored", n)
		}
	}
	if err := e.s.Undelete(bg, "m", "s", 3); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Get(bg, "m", "s", 3)
	wantErr(t, err, ErrVersionDestroyed)
	md, err := e.s.ReadMetadata(bg, "m", "s")
	if err != nil || md.CurrentVersion != 3 || len(md.Versions) != 3 || !md.Versions[2].Destroyed || md.Versions[1].Deleted != true {
		t.Fatalf("metadata: %+v %v", md, err)
	}
	// A new version after destroyed ones.
	e.put(t, "m", "s", `{"v":4}`)
	if got := e.get(t, "m", "s", 0); got != `{"v":4}` {
		t.Fatal(got)
	}
	wantErr(t, e.s.Destroy(bg, "m", "s"), kms.ErrInvalid)
}

func TestMaxVersionsPrunes(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{MaxVersions: 3})
	for i := range 5 {
		e.put(t, "m", "s", mustJSON(map[string]int{"i": i + 1}))
	}
	md, err := e.s.ReadMetadata(bg, "m", "s")
	if err != nil || md.OldestVersion != 3 || md.CurrentVersion != 5 || len(md.Versions) != 3 {
		t.Fatalf("metadata: %+v %v", md, err)
	}
	_, err = e.s.Get(bg, "m", "s", 2)
	wantErr(t, err, ErrVersionNotFound)
	if n := e.count(t, tableData); n != 3 {
		t.Fatalf("%d data records for 3 versions", n)
	}
	// The secret's own setting wins; lowering it prunes at once.
	if _, err := e.s.PutMetadata(bg, "m", "s", MetadataUpdate{MaxVersions: intp(1)}); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, tableData); n != 1 {
		t.Fatalf("%d data records for 1 version", n)
	}
	if got := e.get(t, "m", "s", 0); got != `{"i":5}` {
		t.Fatal(got)
	}
	// Destroyed versions are pruned too; DeleteMetadata removes the rest.
	e.put(t, "m", "s", `{"i":6}`)
	if err := e.s.DeleteMetadata(bg, "m", "s"); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, tableData) + e.count(t, tableMeta); n != 0 {
		t.Fatalf("%d records left after DeleteMetadata", n)
	}
	wantErr(t, e.s.DeleteMetadata(bg, "m", "s"), ErrNotFound)
	// Defaults: 10 versions.
	if _, err := e.s.UpdateMount(bg, "m", MountUpdate{MaxVersions: intp(0)}); err != nil {
		t.Fatal(err)
	}
	for range DefaultMaxVersions + 2 {
		e.put(t, "m", "d", `{}`)
	}
	if md, _ := e.s.ReadMetadata(bg, "m", "d"); len(md.Versions) != DefaultMaxVersions {
		t.Fatalf("%d versions kept by default", len(md.Versions))
	}
}

func TestDeleteVersionAfter(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{DeleteVersionAfter: time.Hour})
	v := e.put(t, "m", "s", `{"a":1}`)
	if !v.DeletionTime.Equal(v.Created.Add(time.Hour)) || v.Deleted {
		t.Fatalf("version: %+v", v)
	}
	e.get(t, "m", "s", 0)
	e.clock.Add(time.Hour)
	_, err := e.s.Get(bg, "m", "s", 0)
	wantErr(t, err, ErrVersionDeleted)
	if err := e.s.Undelete(bg, "m", "s", 1); err != nil {
		t.Fatal(err)
	}
	e.get(t, "m", "s", 0)
	// The shorter of the secret's and the mount's setting applies.
	if _, err := e.s.PutMetadata(bg, "m", "s", MetadataUpdate{DeleteVersionAfter: new(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	v = e.put(t, "m", "s", `{"a":2}`)
	if !v.DeletionTime.Equal(v.Created.Add(time.Minute)) {
		t.Fatalf("version: %+v", v)
	}
}

func TestMetadata(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	md, err := e.s.PutMetadata(bg, "m", "cfg", MetadataUpdate{CustomMetadata: map[string]string{"owner": "team-a"}, MaxVersions: intp(4)})
	if err != nil || md.CurrentVersion != 0 || md.MaxVersions != 4 || md.CustomMetadata["owner"] != "team-a" {
		t.Fatalf("put metadata: %+v %v", md, err)
	}
	_, err = e.s.Get(bg, "m", "cfg", 0)
	wantErr(t, err, ErrNotFound)
	created := md.Created
	e.clock.Add(time.Second)
	e.put(t, "m", "cfg", `{"k":"v"}`)
	sec, _ := e.s.Get(bg, "m", "cfg", 0)
	if sec.CustomMetadata["owner"] != "team-a" {
		t.Fatalf("secret: %+v", sec)
	}
	md, err = e.s.ReadMetadata(bg, "m", "cfg")
	if err != nil || !md.Created.Equal(created) || !md.Updated.After(created) || md.CurrentVersion != 1 || md.OldestVersion != 1 {
		t.Fatalf("metadata: %+v %v", md, err)
	}
	// Settings left out are kept; custom metadata is replaced.
	md, _ = e.s.PutMetadata(bg, "m", "cfg", MetadataUpdate{CustomMetadata: map[string]string{}})
	if md.MaxVersions != 4 || len(md.CustomMetadata) != 0 {
		t.Fatalf("metadata: %+v", md)
	}
	_, err = e.s.ReadMetadata(bg, "m", "nope")
	wantErr(t, err, ErrNotFound)
}

func TestGetMany(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	e.put(t, "m", "a", `{"a":1}`)
	e.put(t, "m", "b", `{"b":1}`)
	e.s.Destroy(bg, "m", "b", 1)
	res, err := e.s.GetMany(bg, "m", []string{"a", "b", "c", "../a", "a"})
	if err != nil || len(res) != 5 {
		t.Fatal(res, err)
	}
	if res[0].Err != nil || string(res[0].Secret.Data) != `{"a":1}` || res[4].Err != nil {
		t.Fatalf("a: %+v", res[0])
	}
	for i, want := range []error{nil, ErrVersionDestroyed, ErrNotFound, ErrInvalidPath} {
		if i > 0 && !errors.Is(res[i].Err, want) {
			t.Fatalf("result %d: %v, want %v", i, res[i].Err, want)
		}
	}
	_, err = e.s.GetMany(bg, "m", nil)
	wantErr(t, err, kms.ErrInvalid)
	_, err = e.s.GetMany(bg, "m", make([]string, MaxReadMany+1))
	wantErr(t, err, kms.ErrInvalid)
}

func TestMove(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	e.put(t, "m", "old/db", `{"v":1}`)
	e.put(t, "m", "old/db", `{"v":2}`)
	e.s.Destroy(bg, "m", "old/db", 1)
	e.s.PutMetadata(bg, "m", "old/db", MetadataUpdate{CustomMetadata: map[string]string{"o": "x"}})
	before, _ := e.s.ReadMetadata(bg, "m", "old/db")
	if err := e.s.Move(bg, "m", "old/db", "new/db"); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.ReadMetadata(bg, "m", "old/db")
	wantErr(t, err, ErrNotFound)
	after, err := e.s.ReadMetadata(bg, "m", "new/db")
	if err != nil || after.CurrentVersion != 2 || !after.Versions[0].Destroyed || after.CustomMetadata["o"] != "x" || !after.Created.Equal(before.Created) {
		t.Fatalf("moved metadata: %+v %v", after, err)
	}
	if got := e.get(t, "m", "new/db", 2); got != `{"v":2}` {
		t.Fatal(got)
	}
	e.put(t, "m", "new/db", `{"v":3}`)
	// The destination must be free; the source must exist.
	e.put(t, "m", "other", `{}`)
	snap := e.dump(t)
	wantErr(t, e.s.Move(bg, "m", "new/db", "other"), ErrExists)
	wantErr(t, e.s.Move(bg, "m", "nope", "x"), ErrNotFound)
	wantErr(t, e.s.Move(bg, "m", "other", "other"), kms.ErrInvalid)
	wantErr(t, e.s.Move(bg, "m", "other", "a/../b"), ErrInvalidPath)
	if !sameDump(snap, e.dump(t)) {
		t.Fatal("a refused move changed storage")
	}
}
