package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil/testca"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/hashicorp/go-hclog"
)

// casRace runs rounds of concurrent check-and-set writes to one secret,
// writer i on stores[i % len(stores)], all with cas = the current version,
// and checks that exactly one wins each version and the others get
// ErrCASMismatch.
func casRace(t *testing.T, ctx context.Context, stores []*Store, writers, rounds int) {
	t.Helper()
	if _, err := stores[0].CreateMount(bg, "race", MountOptions{MaxVersions: MaxVersionsLimit}); err != nil {
		t.Fatal(err)
	}
	for round := range rounds {
		var (
			wg     sync.WaitGroup
			start  = make(chan struct{})
			wins   atomic.Int32
			winner atomic.Int32
		)
		for w := range writers {
			wg.Go(func() {
				<-start
				data := fmt.Appendf(nil, `{"writer":%d,"round":%d}`, w, round)
				v, err := stores[w%len(stores)].Put(ctx, "race", "contended", data, WriteOptions{CAS: intp(round)})
				switch {
				case err == nil:
					wins.Add(1)
					winner.Store(int32(w))
					if v.Version != round+1 {
						t.Errorf("round %d: writer %d won version %d", round, w, v.Version)
					}
				case !errors.Is(err, ErrCASMismatch):
					t.Errorf("round %d: writer %d: %v", round, w, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("round %d: %d writers won version %d", round, n, round+1)
		}
		sec, err := stores[0].Get(bg, "race", "contended", round+1)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`{"writer":%d,"round":%d}`, winner.Load(), round); string(sec.Data) != want {
			t.Fatalf("round %d: version holds %s, the winner wrote %s", round, sec.Data, want)
		}
	}
}

// noLostWrites runs concurrent writes without check-and-set: every write
// that returns gets its own version, holding what it wrote.
func noLostWrites(t *testing.T, ctx context.Context, stores []*Store, writers, each int) {
	t.Helper()
	var (
		mu   sync.Mutex
		got  = map[int]string{}
		wg   sync.WaitGroup
		busy atomic.Int32
	)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				data := fmt.Sprintf(`{"writer":%d,"i":%d}`, w, i)
				v, err := stores[w%len(stores)].Put(ctx, "race", "free", []byte(data), WriteOptions{})
				if errors.Is(err, ErrBusy) {
					busy.Add(1) // lost too often: allowed, and nothing was written
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := got[v.Version]; dup {
					t.Errorf("version %d given to %s and %s", v.Version, prev, data)
				}
				got[v.Version] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d writes, %d gave up", len(got), busy.Load())
	md, err := stores[1%len(stores)].ReadMetadata(bg, "race", "free")
	if err != nil {
		t.Fatal(err)
	}
	if md.CurrentVersion != len(got) {
		t.Fatalf("%d writes returned, current version is %d", len(got), md.CurrentVersion)
	}
	for v, data := range got {
		if sec, err := stores[v%len(stores)].Get(bg, "race", "free", v); err != nil || string(sec.Data) != data {
			t.Fatalf("version %d: %v %v, want %s", v, sec, err, data)
		}
	}
}

// Two Stores over one barrier stand for two nodes: each has its own
// locks, so their writers meet only in the compare-and-swap.
func TestCASRaceOneNode(t *testing.T) {
	e := newEnv(t)
	_, peer := newServices(t, e.b, e.clock)
	stores := []*Store{e.s, peer}
	casRace(t, bg, stores, 16, 8)
	noLostWrites(t, bg, stores, 8, 10)
}

func TestCASRaceThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster")
	}
	stores := newCluster(t, 3)
	casRace(t, bg, stores, 12, 6)
	noLostWrites(t, bg, stores, 6, 8)
}

// In a read session a write's reads share a read index taken before: the
// compare-and-swap must still give each version to exactly one writer, and
// a writer that lost must see the winner's write when it tries again.
func TestCASRaceThreeNodesReadSession(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster")
	}
	stores := newCluster(t, 3)
	ctx := raftstore.WithReadSession(bg)
	casRace(t, ctx, stores, 12, 6)
	noLostWrites(t, ctx, stores, 6, 8)
}

// newCluster starts n durable raftstore nodes with mutual TLS on
// 127.0.0.1, initialises the barrier on the first with a key file, unseals
// every node with it, and returns a Store per node.
func newCluster(t testing.TB, n int) []*Store {
	t.Helper()
	ca := testca.New(t, "secrets test cluster CA")
	nodes := make([]*raftstore.Store, n)
	for i := range nodes {
		id := fmt.Sprintf("node%d", i+1)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := raftstore.DefaultConfig()
		cfg.NodeID, cfg.DataDir, cfg.Listener = id, t.TempDir(), ln
		cfg.TLS = raftstore.TLSMaterial{Certificate: ca.NodeCert(t, id), RootCAs: ca.Pool}
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.Off})
		if nodes[i], err = raftstore.Open(cfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nodes[i].Close() })
	}
	if err := nodes[0].Bootstrap(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return nodes[0].IsLeader() })
	for _, s := range nodes[1:] {
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		err := nodes[0].AddVoter(ctx, s.ID(), s.Addr())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range nodes {
		waitFor(t, func() bool { id, _ := s.Leader(); return id != "" })
	}
	keyFile := filepath.Join(t.TempDir(), "unseal.key")
	if err := kms.GenerateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	stores := make([]*Store, n)
	for i, node := range nodes {
		b, err := kms.NewBarrier(node, clock)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := b.Init(bg, kms.SealConfig{KeyFile: keyFile}); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.UnsealKeyFile(bg, keyFile); err != nil {
			t.Fatal(err)
		}
		_, stores[i] = newServices(t, b, clock)
	}
	return stores
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Readers racing a writer that prunes every older version never see a
// version's metadata without its data: they read again.
func TestReadsDuringPruning(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{MaxVersions: 1})
	_, peer := newServices(t, e.b, e.clock)
	e.put(t, "m", "s", `{"n":0}`)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var patches, busy atomic.Int32
	// A read racing the pruning of the version it found must still answer
	// with the current version: count the reads of each store, and the
	// reads that failed.
	var readOK, readFailed [2]atomic.Int32
	for i, s := range []*Store{e.s, peer} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sec, err := s.Get(bg, "m", "s", 0)
				switch {
				case err == nil && json.Valid(sec.Data) && len(sec.Data) > 2:
					readOK[i].Add(1)
				case err == nil:
					t.Errorf("read %q", sec.Data)
				default:
					readFailed[i].Add(1)
					t.Errorf("read during pruning: %v", err)
				}
				_, err = s.Patch(bg, "m", "s", []byte(`{"p":1}`), WriteOptions{})
				switch {
				case err == nil:
					patches.Add(1)
				case errors.Is(err, kms.ErrCorrupt), kms.Category(err) == kms.ErrNotFound:
					t.Error(err)
				default:
					busy.Add(1) // ErrBusy: lost to the other writers too often
				}
			}
		})
	}
	for i := range 100 {
		_, err := e.s.Put(bg, "m", "s", fmt.Appendf(nil, `{"n":%d}`, i+1), WriteOptions{})
		if err != nil && !errors.Is(err, ErrBusy) {
			t.Errorf("put %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	for i := range readOK {
		if readOK[i].Load() == 0 {
			t.Errorf("store %d: no read succeeded (%d failed)", i, readFailed[i].Load())
		}
	}
	t.Logf("reads: %d and %d; patches: %d succeeded, %d gave up", readOK[0].Load(), readOK[1].Load(), patches.Load(), busy.Load())
}
