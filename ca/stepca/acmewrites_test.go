package stepca

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"golang.org/x/crypto/acme"
)

// writeLog is storage that notes every transaction: the tables it
// writes, so that each Raft entry of a request can be named, and its
// writes. failTxn, if set, may fail a transaction before it is written
// (a storage error); onGet, if set, sees every read first.
type writeLog struct {
	kms.Storage
	mu      sync.Mutex
	txns    []string
	ops     [][]raftstore.Op
	failTxn func([]raftstore.Op) error
	onGet   func(table string)
}

func (w *writeLog) Txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error) {
	var tables []string
	for _, op := range ops {
		if op.Kind != raftstore.OpGet && !slices.Contains(tables, op.Table) {
			tables = append(tables, op.Table)
		}
	}
	w.mu.Lock()
	fail := w.failTxn
	w.txns = append(w.txns, strings.Join(tables, "+"))
	w.ops = append(w.ops, slices.Clone(ops))
	w.mu.Unlock()
	if fail != nil {
		if err := fail(ops); err != nil {
			return raftstore.TxnResult{}, err
		}
	}
	return w.Storage.Txn(ctx, ops)
}

func (w *writeLog) Get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) ([]byte, error) {
	w.mu.Lock()
	on := w.onGet
	w.mu.Unlock()
	if on != nil {
		on(table)
	}
	return w.Storage.Get(ctx, table, key, opts...)
}

func (w *writeLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.txns
	w.txns, w.ops = nil, nil
	return t
}

// takeOps returns the writes of the transactions noted, and forgets them.
func (w *writeLog) takeOps() [][]raftstore.Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.ops
	w.txns, w.ops = nil, nil
	return o
}

func (w *writeLog) set(failTxn func([]raftstore.Op) error, onGet func(string)) {
	w.mu.Lock()
	w.failTxn, w.onGet = failTxn, onGet
	w.mu.Unlock()
}

// entriesEnv is an env whose storage notes its transactions, over custos'
// CA (inventoryEnv).
func entriesEnv(t *testing.T) (*env, *writeLog) {
	t.Helper()
	e, wl, _ := inventoryEnv(t)
	return e, wl
}

// applied waits until the store applied everything it logged, and
// returns the applied index.
func applied(t *testing.T, s *raftstore.Store) uint64 {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if st := s.Status(); st.AppliedIndex >= st.CommitIndex && st.CommitIndex >= st.LastIndex {
			return st.AppliedIndex
		}
	}
	t.Fatal("the store did not apply its log")
	return 0
}

// TestACMEEntriesPerIssuance counts the Raft log entries of complete
// http-01 issuances, request by request, with one client and no other
// writer: a new order is one entry (its records in one transaction), a
// challenge that validates is one (the challenge and its authorization,
// made valid), reads write nothing (an order whose authorizations are all
// valid is ready without a write), and a finalisation is one: the
// inventory record (custos' CA, ca.Record's writes), the certificate and
// the valid order. Before, the record was an entry of its own (four
// entries); before that, fetching the authorization wrote it (valid), and
// polling the order or finalising it wrote the order (ready): six.
func TestACMEEntriesPerIssuance(t *testing.T) {
	e, wl := entriesEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)

	for _, flow := range []struct {
		name      string
		pollOrder bool // x/crypto/acme's WaitOrder before finalize; lego and certbot finalize at once
	}{{"poll order", true}, {"finalize at once", false}} {
		t.Run(flow.name, func(t *testing.T) {
			name := strings.ReplaceAll(flow.name, " ", "-") + ".test"
			ids := acme.DomainIDs(name)
			total := 0
			var steps, lastTxns []string
			step := func(kind string, want int, do func() error) {
				t.Helper()
				before := applied(t, e.store)
				wl.take()
				if err := do(); err != nil {
					t.Fatalf("%s: %v", kind, err)
				}
				n := int(applied(t, e.store) - before)
				txns := wl.take()
				lastTxns = txns
				t.Logf("%-16s %d entries %v", kind, n, txns)
				total += n
				steps = append(steps, fmt.Sprintf("%s=%d", kind, n))
				if n != want {
					t.Errorf("%s: %d Raft entries %v, want %d", kind, n, txns, want)
				}
			}
			var o *acme.Order
			var z *acme.Authorization
			step("new order", 1, func() (err error) { o, err = c.AuthorizeOrder(ctx, ids); return err })
			step("authz fetch", 0, func() (err error) { z, err = c.GetAuthorization(ctx, o.AuthzURLs[0]); return err })
			var chal *acme.Challenge
			for _, ch := range z.Challenges {
				if ch.Type == "http-01" {
					chal = ch
				}
			}
			ka, err := c.HTTP01ChallengeResponse(chal.Token)
			if err != nil {
				t.Fatal(err)
			}
			e.ch.setHTTP(chal.Token, ka)
			step("challenge", 1, func() error { _, err := c.Accept(ctx, chal); return err })
			step("authz poll", 0, func() error {
				z, err := c.WaitAuthorization(ctx, z.URI)
				if err == nil && z.Status != acme.StatusValid {
					err = fmt.Errorf("authorization %s", z.Status)
				}
				return err
			})
			if flow.pollOrder {
				step("order poll", 0, func() error {
					o2, err := c.WaitOrder(ctx, o.URI)
					if err == nil && o2.Status != acme.StatusReady {
						err = fmt.Errorf("order %s", o2.Status)
					}
					return err
				})
			}
			var certURL string
			step("finalize", 1, func() (err error) {
				_, certURL, err = c.CreateOrderCert(ctx, o.FinalizeURL, newCSR(nil, ids), false)
				return err
			})
			if !slices.ContainsFunc(lastTxns, func(tables string) bool {
				return strings.Contains(tables, inventoryCerts) && strings.Contains(tables, TablePrefix+bucketOrders)
			}) {
				t.Errorf("finalize wrote %v: want the inventory record and the order in one transaction", lastTxns)
			}
			step("cert fetch", 0, func() error {
				der, err := c.FetchCert(ctx, certURL, true)
				if err == nil {
					var chain []*x509.Certificate
					if chain, err = parseChain(der); err == nil {
						e.ca.verify(t, chain)
					}
				}
				return err
			})
			t.Logf("%s: %d Raft entries per issuance (%s)", flow.name, total, strings.Join(steps, " "))
			if total != 3 {
				t.Errorf("%d Raft entries per issuance, want 3 (new order, challenge, certificate with its record and the order)", total)
			}
		})
	}
}

// TestACMEChallengeWrites: a challenge that validates makes its own
// authorization valid in the same write, and only its own: one whose URL
// names another authorization of the account (step reads the challenge by
// its ID alone) leaves that authorization pending. A challenge that fails
// is written alone and leaves its authorization pending, as step does.
func TestACMEChallengeWrites(t *testing.T) {
	e, wl := entriesEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	raw := e.rawClient(t, c)
	o, err := c.AuthorizeOrder(ctx, acme.DomainIDs("a.test", "b.test", "bad.test"))
	if err != nil {
		t.Fatal(err)
	}
	var zs []*acme.Authorization
	http01 := map[string]*acme.Challenge{}
	for _, u := range o.AuthzURLs {
		z, err := c.GetAuthorization(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		zs = append(zs, z)
		for _, ch := range z.Challenges {
			if ch.Type == "http-01" {
				http01[z.Identifier.Value] = ch
			}
		}
	}
	byName := func(name string) *acme.Authorization {
		for _, z := range zs {
			if z.Identifier.Value == name {
				return z
			}
		}
		t.Fatalf("no authorization for %s", name)
		return nil
	}
	status := func(z *acme.Authorization) string {
		t.Helper()
		got, err := c.GetAuthorization(ctx, z.URI)
		if err != nil {
			t.Fatal(err)
		}
		return got.Status
	}
	answer := func(name string) {
		ka, err := c.HTTP01ChallengeResponse(http01[name].Token)
		if err != nil {
			t.Fatal(err)
		}
		e.ch.setHTTP(http01[name].Token, ka)
	}
	entries := func(what string, want int, do func()) {
		t.Helper()
		before := applied(t, e.store)
		wl.take()
		do()
		if n := int(applied(t, e.store) - before); n != want {
			t.Errorf("%s: %d Raft entries %v, want %d", what, n, wl.take(), want)
		}
	}

	// a.test's challenge, POSTed under b.test's authorization.
	za, zb := byName("a.test"), byName("b.test")
	answer("a.test")
	crossed := strings.Replace(http01["a.test"].URI, "/"+lastSegment(za.URI)+"/", "/"+lastSegment(zb.URI)+"/", 1)
	if crossed == http01["a.test"].URI {
		t.Fatalf("challenge URL %s does not hold its authorization's ID", crossed)
	}
	entries("challenge under another authorization", 1, func() {
		resp, body := raw.post(t, crossed, raw.sign(t, crossed, map[string]any{}))
		if resp.StatusCode != 200 {
			t.Fatalf("challenge: %d %s", resp.StatusCode, body)
		}
	})
	if s := status(zb); s != acme.StatusPending {
		t.Errorf("b.test's authorization is %s after a.test's challenge validated under its URL, want pending", s)
	}
	if s := status(za); s != acme.StatusValid {
		t.Errorf("a.test's authorization is %s after its challenge validated, want valid", s)
	}

	// b.test's challenge, under its own authorization: one write.
	answer("b.test")
	entries("challenge", 1, func() {
		if _, err := c.Accept(ctx, http01["b.test"]); err != nil {
			t.Fatal(err)
		}
	})
	entries("authorization read", 0, func() {
		if s := status(zb); s != acme.StatusValid {
			t.Errorf("b.test's authorization is %s, want valid", s)
		}
	})

	// A wrong key authorization: the challenge is invalid, the
	// authorization pending, and the order not ready.
	e.ch.setHTTP(http01["bad.test"].Token, "not-the-key-authorization")
	entries("failed challenge", 1, func() {
		ch, err := c.Accept(ctx, http01["bad.test"])
		if err != nil || ch.Status != acme.StatusInvalid {
			t.Fatalf("failed challenge: %+v, %v", ch, err)
		}
	})
	if s := status(byName("bad.test")); s != acme.StatusPending {
		t.Errorf("bad.test's authorization is %s after its challenge failed, want pending", s)
	}
	if got, err := c.GetOrder(ctx, o.URI); err != nil || got.Status != acme.StatusPending {
		t.Errorf("order: %+v, %v; want pending", got, err)
	}
}

func lastSegment(u string) string { return u[strings.LastIndex(u, "/")+1:] }
