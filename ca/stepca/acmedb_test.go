package stepca

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	stepacme "github.com/smallstep/certificates/acme"
	"golang.org/x/crypto/acme"
)

// countingStore counts the reads and the transactions that reach storage,
// by table.
type countingStore struct {
	kms.Storage
	mu    sync.Mutex
	reads map[string]int
	txns  int
}

func (c *countingStore) Get(ctx context.Context, table string, key []byte, o ...raftstore.ReadOption) ([]byte, error) {
	c.mu.Lock()
	c.reads[table]++
	c.mu.Unlock()
	return c.Storage.Get(ctx, table, key, o...)
}

func (c *countingStore) Txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error) {
	c.mu.Lock()
	c.txns++
	c.mu.Unlock()
	return c.Storage.Txn(ctx, ops)
}

func (c *countingStore) reset() (reads map[string]int, txns int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reads, txns = c.reads, c.txns
	c.reads, c.txns = map[string]int{}, 0
	return reads, txns
}

// TestACMENewOrderCost: a new order is one storage transaction and reads
// none of the account's other orders, however many are pending (step
// wrote six records one by one and read every pending order of the
// account, under one lock for all accounts).
func TestACMENewOrderCost(t *testing.T) {
	cs := &countingStore{reads: map[string]int{}}
	e := newEnv(t, func(c *Config) { cs.Storage, c.Storage = c.Storage, cs })
	ctx := context.Background()
	c := e.newACMEClient(t)
	for i := range 5 {
		if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs(fmt.Sprintf("p%d.test", i))); err != nil {
			t.Fatal(err)
		}
	}
	cs.reset()
	if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("sixth.test")); err != nil {
		t.Fatal(err)
	}
	reads, txns := cs.reset()
	if txns != 1 {
		t.Errorf("new order: %d storage transactions, want 1", txns)
	}
	for _, b := range []string{bucketOrders, bucketAuthzs, bucketChallenges, bucketOrderIndex} {
		if n := reads[TablePrefix+b]; n != 0 {
			t.Errorf("new order read %s %d times", b, n)
		}
	}
}

// TestACMESharedAccount: 32 clients of ONE account (as cert-manager,
// Caddy and Traefik share an account per issuer) issue at once, two
// certificates each: no request fails, every certificate is recorded,
// and the account's order list and order index end empty.
func TestACMESharedAccount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first := e.newACMEClient(t)
	const clients, each = 32, 2
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for i := range clients {
		c := e.sameAccount(first)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				name := fmt.Sprintf("s%d-%d.test", i, j)
				chain, err := e.issue(ctx, c, "http-01", acme.DomainIDs(name))
				if err == nil && chain[0].DNSNames[0] != name {
					err = fmt.Errorf("certificate for %v", chain[0].DNSNames)
				}
				if err != nil {
					errs <- fmt.Errorf("client %d order %d: %w", i, j, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.rec.count(); got != clients*each {
		t.Errorf("%d certificates recorded, want %d", got, clients*each)
	}
	if orders := e.orderList(t, first); len(orders) != 0 {
		t.Errorf("order list after the issuances: %v", orders)
	}
	if n := e.tableRows(t, OrderIndexTable); n != 0 {
		t.Errorf("%d order index entries left", n)
	}
}

// TestACMEOrderList: the account's order list shows its pending orders,
// and an order that became valid leaves it and the index.
func TestACMEOrderList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	var uris []string
	for i := range 3 {
		o, err := c.AuthorizeOrder(ctx, acme.DomainIDs(fmt.Sprintf("l%d.test", i)))
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, o.URI)
	}
	if got := e.orderList(t, c); !sameSet(got, uris) {
		t.Fatalf("order list %v, want %v", got, uris)
	}
	if _, err := e.issue(ctx, c, "http-01", acme.DomainIDs("done.test")); err != nil {
		t.Fatal(err)
	}
	if n := e.tableRows(t, OrderIndexTable); n != 3 {
		t.Errorf("%d order index entries, want the 3 pending orders'", n)
	}
	if got := e.orderList(t, c); !sameSet(got, uris) {
		t.Errorf("order list after an issuance %v, want %v", got, uris)
	}
}

// TestACMEOrderOnlyAdvances: an order status computed from a stale read
// (ready, while the order is valid) is not written; the caller gets the
// stored order. Step's UpdateOrder would move the order back to ready,
// without its certificate, to be finalized again.
func TestACMEOrderOnlyAdvances(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	if _, err := e.issue(ctx, c, "http-01", acme.DomainIDs("v.test")); err != nil {
		t.Fatal(err)
	}
	var id string
	if err := listAll(ctx, e.b, TablePrefix+bucketOrders, func(kv raftstore.KV) error { id = string(kv.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	stored, err := e.srv.acmeDB.GetOrder(ctx, id)
	if err != nil || stored.Status != stepacme.StatusValid || stored.CertificateID == "" {
		t.Fatalf("order %s: %+v, %v", id, stored, err)
	}
	stale := *stored
	stale.Status, stale.CertificateID = stepacme.StatusReady, ""
	if err := e.srv.acmeDB.UpdateOrder(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	if stale.Status != stepacme.StatusValid || stale.CertificateID != stored.CertificateID {
		t.Errorf("caller's order after a stale update: %s %q", stale.Status, stale.CertificateID)
	}
	now, err := e.srv.acmeDB.GetOrder(ctx, id)
	if err != nil || now.Status != stepacme.StatusValid || now.CertificateID != stored.CertificateID {
		t.Errorf("stored order after a stale update: %+v, %v", now, err)
	}
}

// TestLockKey: requests on one order, or on one authorization and its
// challenges, share a lock; new orders and order lists take none.
func TestLockKey(t *testing.T) {
	for _, tc := range []struct{ path, account, want string }{
		{"/acme/p/new-order", "A", ""},
		{"/acme/p/new-account", "", ""},
		{"/acme/p/order/O1", "A", "order/O1"},
		{"/acme/p/order/O1/finalize", "A", "order/O1"},
		{"/acme/p/authz/Z1", "A", "authz/Z1"},
		{"/acme/p/challenge/Z1/C1", "A", "authz/Z1"},
		{"/acme/p/account/A", "A", "account/A"},
		{"/acme/p/account/A/orders", "A", ""},
		{"/acme/p/key-change", "A", "account/A"},
		{"/acme/p/revoke-cert", "A", "account/A"},
		{"/acme/p/revoke-cert", "", ""},
		{"/acme/p/certificate/X", "A", ""},
		{"/acme/p", "A", ""},
	} {
		r := httptest.NewRequest(http.MethodPost, tc.path, nil)
		if got := lockKey(r, tc.account); got != tc.want {
			t.Errorf("lockKey(%s, %q) = %q, want %q", tc.path, tc.account, got, tc.want)
		}
	}
}

// orderList fetches the account's order list (POST-as-GET).
func (e *env) orderList(t *testing.T, c *acme.Client) []string {
	t.Helper()
	raw := e.rawClient(t, c)
	resp, body := raw.post(t, raw.kid+"/orders", raw.sign(t, raw.kid+"/orders", nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("orders list: %d %s", resp.StatusCode, body)
	}
	var list []string // step answers a bare array
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("orders list: %v: %s", err, body)
	}
	return list
}

func (e *env) tableRows(t *testing.T, table string) int {
	t.Helper()
	n := 0
	if err := listAll(context.Background(), e.b, table, func(raftstore.KV) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]bool{}
	for _, s := range a {
		seen[strings.TrimSpace(s)] = true
	}
	for _, s := range b {
		if !seen[s] {
			return false
		}
	}
	return true
}
