package node

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	bolt "go.etcd.io/bbolt"
)

// rootClient is a client of node i of tc with the root token.
func rootClient(t *testing.T, tc *testCluster, i int) *client {
	c := newClient(t, tc.nodes[i], tc.caFile)
	c.token = tc.root
	return c
}

func (tc *testCluster) leader(t testing.TB) int {
	t.Helper()
	var idx int
	waitFor(t, 30*time.Second, func() bool {
		for i, n := range tc.nodes {
			if n.store.IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

// leaderAndFollower returns the index of the leader and of one follower.
func (tc *testCluster) leaderAndFollower(t testing.TB) (leader, follower int) {
	t.Helper()
	leader = tc.leader(t)
	return leader, (leader + 1) % len(tc.nodes)
}

func download(t *testing.T, c *client, path string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(api.TokenHeader, c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
	}
	return b
}

func putSecret(c *client, path string, i int) (int, string) {
	return c.do("PUT", "/v1/secret/kv/data/"+path, api.SecretWriteRequest{Data: fmt.Appendf(nil, `{"i":%d}`, i)}, nil)
}

// writeEverywhere writes through every node of tc, then reads every write
// back on every node.
func writeEverywhere(t *testing.T, tc *testCluster, tok, prefix string) {
	t.Helper()
	for i, n := range tc.nodes {
		c := newClient(t, n, tc.caFile)
		c.token = tok
		if status, code := putSecret(c, fmt.Sprintf("%s/%d", prefix, i), i); status != http.StatusOK {
			t.Fatalf("write on node %d: %d %s", i, status, code)
		}
	}
	for i, n := range tc.nodes {
		c := newClient(t, n, tc.caFile)
		c.token = tok
		for j := range tc.nodes {
			var sec api.SecretReadResponse
			c.must("GET", fmt.Sprintf("/v1/secret/kv/data/%s/%d", prefix, j), nil, &sec)
			if string(sec.Data) != fmt.Sprintf(`{"i":%d}`, j) {
				t.Fatalf("node %d reads %s/%d = %s", i, prefix, j, sec.Data)
			}
		}
	}
}

func sealed(t *testing.T, tc *testCluster, i int) bool {
	var st api.SealStatus
	newClient(t, tc.nodes[i], tc.caFile).must("GET", "/v1/sys/seal-status", nil, &st)
	return st.Sealed
}

// TestRestoreBackups restores, on a real three-node cluster, first an
// older backup of its own (the nodes stay unsealed and take writes at
// once), then the backup of another cluster that was further along: it
// needs force, then every node seals and opens with the other cluster's
// keys, and takes writes on every node.
func TestRestoreBackups(t *testing.T) {
	a := newTestCluster(t, 3)
	ca := rootClient(t, a, 0)
	ca.must("POST", "/v1/sys/mounts/kv", api.SecretMountRequest{}, nil)
	for i := 0; i < 150; i++ {
		c := rootClient(t, a, i%3)
		if status, code := putSecret(c, fmt.Sprintf("a/%d", i), i); status != http.StatusOK {
			t.Fatalf("write %d: %d %s", i, status, code)
		}
	}
	backupA := download(t, rootClient(t, a, 2), "/v1/sys/raft/snapshot")

	b := newTestCluster(t, 3)
	rootClient(t, b, 0).must("POST", "/v1/sys/mounts/kv", api.SecretMountRequest{}, nil)
	backupB := download(t, rootClient(t, b, 1), "/v1/sys/raft/snapshot")
	writeEverywhere(t, b, b.root, "b")
	if bi, ai := b.nodes[0].store.Status().LastIndex, a.nodes[0].store.AppliedIndex(); bi >= ai {
		t.Fatalf("cluster B (index %d) is not behind A (%d): nothing is tested", bi, ai)
	}

	// An older backup of this cluster: restored as it is, no unseal needed.
	bl := rootClient(t, b, b.leader(t))
	if status, code := bl.do("POST", "/v1/sys/raft/snapshot", backupB, nil); status != http.StatusNoContent {
		t.Fatalf("restore of B's own backup: %d %s", status, code)
	}
	for i := range b.nodes {
		waitFor(t, 30*time.Second, func() bool {
			status, _ := rootClient(t, b, i).do("GET", "/v1/secret/kv/data/b/0", nil, nil)
			return status == http.StatusNotFound
		})
	}
	writeEverywhere(t, b, b.root, "b2")

	// Another cluster's backup: refused without force.
	bl = rootClient(t, b, b.leader(t))
	if status, code := bl.do("POST", "/v1/sys/raft/snapshot", backupA, nil); status != http.StatusBadRequest || code != api.CodeInvalidArgument {
		t.Fatalf("restore of another cluster's backup without force: %d %s", status, code)
	}
	if status, code := bl.do("POST", "/v1/sys/raft/snapshot?force=maybe", backupA, nil); status != http.StatusBadRequest || code != api.CodeInvalidArgument {
		t.Fatalf("force=maybe: %d %s", status, code)
	}
	if status, code := bl.do("POST", "/v1/sys/raft/snapshot?force=true", backupA, nil); status != http.StatusNoContent {
		t.Fatalf("forced restore: %d %s", status, code)
	}
	// B's keys do not open A's barrier: every node seals, and opens with
	// A's keys.
	withA := *b
	withA.keys = a.keys
	for i := range b.nodes {
		waitFor(t, 30*time.Second, func() bool { return sealed(t, b, i) })
		withA.unseal(t, i)
	}
	writeEverywhere(t, b, a.root, "after")
	for i := range b.nodes {
		var sec api.SecretReadResponse
		c := newClient(t, b.nodes[i], b.caFile)
		c.token = a.root
		c.must("GET", "/v1/secret/kv/data/a/149", nil, &sec)
		if string(sec.Data) != `{"i":149}` {
			t.Fatalf("node %d: A's data after the restore: %s", i, sec.Data)
		}
		if status, _ := c.do("GET", "/v1/secret/kv/data/b2/0", nil, nil); status != http.StatusNotFound {
			t.Fatalf("node %d: B's data survived the restore: %d", i, status)
		}
	}
}

// TestScheduledBackups runs backups every 300 ms, keeping two.
func TestScheduledBackups(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "backups")
	tc := newTestClusterWith(t, 1, func(c *Config) {
		c.BackupInterval, c.BackupDir, c.BackupKeep = 300*time.Millisecond, dir, 2
	})
	name := regexp.MustCompile(`^custos-\d{8}T\d{6}\.\d{3}Z\.snap$`)
	seen := map[string]bool{}
	var current []string
	waitFor(t, 60*time.Second, func() bool {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return false
		}
		current = current[:0]
		for _, e := range ents {
			if name.MatchString(e.Name()) {
				seen[e.Name()] = true
				current = append(current, e.Name())
			}
		}
		// A new backup is renamed into place before the old ones are
		// pruned: between the two, one more than kept is there.
		if len(current) > 3 {
			t.Fatalf("%d backups kept, want at most 2 (3 while one is pruned): %v", len(current), current)
		}
		return len(seen) >= 5 && len(current) == 2
	})
	tc.nodes[0].Close()
	// Stopped, the node has finished its last prune: at most 2 remain.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	current = current[:0]
	for _, e := range ents {
		if name.MatchString(e.Name()) {
			current = append(current, e.Name())
		}
	}
	if len(current) < 1 || len(current) > 2 {
		t.Fatalf("%d backups kept after the node stopped, want 1 or 2: %v", len(current), current)
	}
	for _, f := range current {
		path := filepath.Join(dir, f)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v", f, fi.Mode())
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatalf("%s is not a state file: %v", f, err)
		}
		err = db.View(func(tx *bolt.Tx) error {
			if tx.Bucket([]byte("_meta")) == nil || tx.Bucket([]byte("t/sys")) == nil {
				return fmt.Errorf("%s lacks the store's buckets", f)
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".custos-backup-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
