package node

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

const failoverClients = 32

// The operations of the failover load, in turn.
const (
	opPut = iota
	opGet
	opEncrypt
	numOps
)

var opNames = [numOps]string{"put", "get", "encrypt"}

// BenchmarkFailover kills the leader of a durable 3-node cluster, as a
// crash would (its API listener and connections close, its store stops
// without handing leadership over), under a closed loop of 32 clients
// sending KV puts, KV gets and encryptions in turn over HTTPS, each to the
// next live node. The cluster runs with the Raft timings a production node
// gets by default, not the tests' shorter ones.
//
// Each iteration is one failover: load, kill, load until every kind of
// request has succeeded again for a while, then restart the killed node and
// wait for it to catch up. It reports, as the worst over the iterations:
//
//   - max-stall-ms: the longest gap between two successful completions of
//     the same kind of request (put, get or encrypt);
//   - any-stall-ms: the longest gap between two successful completions of
//     any kind;
//   - first-ok-ms: from the kill to the first success of a request sent
//     after it;
//   - elected-ms: from the kill until a surviving node leads;
//   - killed-node-fails: requests that were sent to the killed node and
//     failed (a real client retries those elsewhere; not an error here);
//   - elections: the Raft terms the survivors went through to elect the
//     new leader (1 unless votes split);
//   - needless-elections: elections under the load before the kill, when
//     the leader was alive (the price of short timeouts on a busy machine);
//
// and the mean max-stall-ms. Any failed request to a surviving node fails
// the benchmark. Run several failovers with e.g. -benchtime 5x.
func BenchmarkFailover(b *testing.B) {
	fb := newFailoverBench(b)
	var worst failoverRound
	var stallSum time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i > 0 {
			b.StopTimer()
			fb.restartKilled(b)
			b.StartTimer()
		}
		r := fb.round(b)
		b.Logf("failover %d: %s", i+1, r)
		if r.fails > 0 {
			b.Fatalf("%d requests to surviving nodes failed, e.g. %s", r.fails, strings.Join(r.sample, "; "))
		}
		worst.max(r)
		stallSum += r.maxStall()
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(worst.maxStall()), "max-stall-ms")
	b.ReportMetric(ms(stallSum)/float64(b.N), "mean-max-stall-ms")
	b.ReportMetric(ms(worst.anyStall), "any-stall-ms")
	b.ReportMetric(ms(worst.firstOK), "first-ok-ms")
	b.ReportMetric(ms(worst.elected), "elected-ms")
	b.ReportMetric(float64(worst.killedFails), "killed-node-fails")
	b.ReportMetric(float64(worst.elections), "elections")
	b.ReportMetric(float64(worst.needless), "needless-elections")
	b.ReportMetric(0, "ns/op")
}

// failoverBench is a 3-node cluster and the data the load uses.
type failoverBench struct {
	tc      *testCluster
	roots   *x509.CertPool
	killed  int // index of the node the last round killed, -1 if none
	encBody []byte
	kvBody  []byte
	seeded  []string
	kvSeq   atomic.Int64
}

func newFailoverBench(b *testing.B) *failoverBench {
	tc := newTestClusterWith(b, 3, func(c *Config) {
		c.APIHosts = []string{lbHost}
		// raftstore's defaults, as a production node has them.
		c.HeartbeatTimeout, c.ElectionTimeout = 0, 0
	})
	fb := &failoverBench{tc: tc, killed: -1}
	pemCA, err := os.ReadFile(tc.caFile)
	if err != nil {
		b.Fatal(err)
	}
	fb.roots = x509.NewCertPool()
	fb.roots.AppendCertsFromPEM(pemCA)

	admin := newClient(b, tc.nodes[0], tc.caFile)
	admin.token = tc.root
	admin.must("POST", "/v1/kms/keys/failover", map[string]any{"type": "aes256-gcm96"}, nil)
	pt := make([]byte, payloadSize)
	rand.Read(pt)
	fb.encBody, _ = json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
	admin.must("POST", "/v1/sys/mounts/failover", api.SecretMountRequest{}, nil)
	v := make([]byte, (payloadSize-len(`{"data":{"v":""}}`))*3/4)
	rand.Read(v)
	fb.kvBody, _ = json.Marshal(map[string]any{"data": map[string]string{"v": base64.RawURLEncoding.EncodeToString(v)}})
	for i := range 64 {
		p := fmt.Sprintf("/v1/secret/failover/data/seed/%d", i)
		admin.must("POST", p, fb.kvBody, nil)
		fb.seeded = append(fb.seeded, p)
	}
	return fb
}

// leaderIndex waits for a leader that every node agrees on.
func (fb *failoverBench) leaderIndex(b *testing.B) int {
	li := -1
	waitFor(b, 60*time.Second, func() bool {
		li = -1
		for i, n := range fb.tc.nodes {
			if n.store.IsLeader() {
				li = i
			}
		}
		if li < 0 {
			return false
		}
		for _, n := range fb.tc.nodes {
			if id, _ := n.store.Leader(); id != fb.tc.nodes[li].cfg.NodeID {
				return false
			}
		}
		return true
	})
	return li
}

// restartKilled starts the node the last round killed again from its data
// directory, unseals it and waits until it is a caught-up voter.
func (fb *failoverBench) restartKilled(b *testing.B) {
	i := fb.killed
	if i < 0 {
		return
	}
	fb.tc.nodes[i].Close()
	cfg := fb.tc.cfgs[i]
	cfg.JoinAddr, cfg.JoinToken, cfg.JoinCAFingerprint = "", "", ""
	n := startNode(b, cfg)
	fb.tc.nodes[i], fb.tc.cfgs[i] = n, cfg
	waitFor(b, 60*time.Second, func() bool { id, _ := n.store.Leader(); return id != "" })
	fb.tc.unseal(b, i)
	li := fb.leaderIndex(b)
	leader := fb.tc.nodes[li]
	waitFor(b, 60*time.Second, func() bool {
		return voters(leader) == 3 && n.store.AppliedIndex() >= leader.store.AppliedIndex()
	})
	fb.killed = -1
}

// failoverRound is what one failover showed.
type failoverRound struct {
	stall       [numOps]time.Duration // longest gap between successes of each kind
	anyStall    time.Duration         // longest gap between any successes
	firstOK     time.Duration         // kill to the first success of a request sent after it
	firstOKOp   [numOps]time.Duration // the same, per kind
	elected     time.Duration         // kill to a surviving leader
	killedFails int64
	elections   uint64 // terms from the kill to the new leader's
	needless    uint64 // terms begun under load before the kill
	fails       int64
	sample      []string
	ops         int
}

func (r *failoverRound) maxStall() time.Duration { return slices.Max(r.stall[:]) }

func (r *failoverRound) max(o *failoverRound) {
	for k := range numOps {
		r.stall[k] = max(r.stall[k], o.stall[k])
		r.firstOKOp[k] = max(r.firstOKOp[k], o.firstOKOp[k])
	}
	r.anyStall = max(r.anyStall, o.anyStall)
	r.firstOK = max(r.firstOK, o.firstOK)
	r.elected = max(r.elected, o.elected)
	r.killedFails = max(r.killedFails, o.killedFails)
	r.elections = max(r.elections, o.elections)
	r.needless = max(r.needless, o.needless)
}

func (r *failoverRound) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d.Microseconds())/1000) }
	var s strings.Builder
	fmt.Fprintf(&s, "%d ops; elected after %s; first success after %s;", r.ops, ms(r.elected), ms(r.firstOK))
	for k := range numOps {
		fmt.Fprintf(&s, " %s: stall %s, first %s;", opNames[k], ms(r.stall[k]), ms(r.firstOKOp[k]))
	}
	fmt.Fprintf(&s, " any: stall %s; %d failed on the killed node; %d election(s), %d needless before the kill",
		ms(r.anyStall), r.killedFails, r.elections, r.needless)
	return s.String()
}

// completion is one successful request.
type completion struct {
	op         int
	start, end time.Time
}

// round runs the load, kills the leader, and runs the load on until every
// kind of request has succeeded again for two seconds.
func (fb *failoverBench) round(b *testing.B) *failoverRound {
	li := fb.leaderIndex(b)
	termStart := fb.tc.nodes[li].store.Status().Term
	clients := make([]*http.Client, len(fb.tc.nodes))
	for i, n := range fb.tc.nodes {
		tr := nodeTransport(n, fb.roots, failoverClients)
		defer tr.CloseIdleConnections()
		clients[i] = &http.Client{Timeout: time.Minute, Transport: tr}
	}
	var live atomic.Pointer[[]int]
	all := []int{0, 1, 2}
	live.Store(&all)

	var (
		stop, seq, pick, killNano atomic.Int64
		firstOK                   [numOps]atomic.Int64 // unix nanoseconds
		fails, killedFails        atomic.Int64
		mu                        sync.Mutex
		sample                    []string
		wg                        sync.WaitGroup
	)
	done := make([][]completion, failoverClients)
	for w := range failoverClients {
		wg.Go(func() {
			for stop.Load() == 0 {
				op := int(seq.Add(1) % numOps)
				nodes := *live.Load()
				ni := nodes[int(pick.Add(1))%len(nodes)]
				start := time.Now()
				err := fb.do(clients[ni], op)
				end := time.Now()
				if err != nil {
					if ni == li && killNano.Load() != 0 {
						killedFails.Add(1)
						continue
					}
					fails.Add(1)
					mu.Lock()
					if len(sample) < 3 {
						sample = append(sample, fmt.Sprintf("%s on %s: %v", opNames[op], fb.tc.nodes[ni].cfg.NodeID, err))
					}
					mu.Unlock()
					continue
				}
				done[w] = append(done[w], completion{op: op, start: start, end: end})
				if k := killNano.Load(); k != 0 && start.UnixNano() > k {
					firstOK[op].CompareAndSwap(0, end.UnixNano())
				}
			}
		})
	}

	time.Sleep(2 * time.Second) // warm up the connections and the load
	termKill := fb.tc.nodes[li].store.Status().Term
	survivors := slices.DeleteFunc(slices.Clone(all), func(i int) bool { return i == li })
	fb.killed = li
	live.Store(&survivors)
	kill := time.Now()
	killNano.Store(kill.UnixNano())
	elected := make(chan time.Time, 1)
	go func() {
		for time.Since(kill) < time.Minute {
			for _, i := range survivors {
				if fb.tc.nodes[i].store.IsLeader() {
					elected <- time.Now()
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
		close(elected)
	}()
	dead := fb.tc.nodes[li]
	dead.http.Close()
	dead.store.Kill()

	// Load on until each kind has succeeded again and two more seconds
	// have passed.
	deadline := kill.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		last := int64(0)
		for k := range numOps {
			f := firstOK[k].Load()
			if f == 0 {
				last = -1
				break
			}
			last = max(last, f)
		}
		if last > 0 && time.Since(time.Unix(0, last)) > 2*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop.Store(1)
	wg.Wait()

	r := &failoverRound{fails: fails.Load(), killedFails: killedFails.Load(), sample: sample, needless: termKill - termStart}
	for _, i := range survivors {
		if n := fb.tc.nodes[i]; n.store.IsLeader() {
			r.elections = n.store.Status().Term - termKill
		}
	}
	if t, ok := <-elected; ok {
		r.elected = t.Sub(kill)
	}
	var ends [numOps][]time.Time
	var every []time.Time
	for _, cs := range done {
		for _, c := range cs {
			ends[c.op] = append(ends[c.op], c.end)
			every = append(every, c.end)
		}
	}
	r.ops = len(every)
	gap := func(ts []time.Time) time.Duration {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		var g time.Duration
		for i := 1; i < len(ts); i++ {
			g = max(g, ts[i].Sub(ts[i-1]))
		}
		return g
	}
	for k := range numOps {
		r.stall[k] = gap(ends[k])
		if f := firstOK[k].Load(); f != 0 {
			r.firstOKOp[k] = time.Unix(0, f).Sub(kill)
			if r.firstOK == 0 || r.firstOKOp[k] < r.firstOK {
				r.firstOK = r.firstOKOp[k]
			}
		}
	}
	r.anyStall = gap(every)
	return r
}

// do sends one request of kind op with the root token.
func (fb *failoverBench) do(hc *http.Client, op int) error {
	switch op {
	case opPut:
		p := fmt.Sprintf("/v1/secret/failover/data/put/%d", fb.kvSeq.Add(1))
		return call(hc, "POST", benchURL+p, fb.tc.root, fb.kvBody)
	case opGet:
		p := fb.seeded[int(fb.kvSeq.Add(1))%len(fb.seeded)]
		return call(hc, "GET", benchURL+p, fb.tc.root, nil)
	default:
		return call(hc, "POST", benchURL+"/v1/kms/encrypt/failover", fb.tc.root, fb.encBody)
	}
}
