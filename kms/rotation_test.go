package kms

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// setRotation stores c as the cluster's rotation config without Validate,
// so that tests can use counts small enough to reach.
func setRotation(t *testing.T, n *testNode, c RotationConfig) {
	t.Helper()
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.store.Put(bg, tableCore, recRotation, raw); err != nil {
		t.Fatal(err)
	}
}

// termsInStore counts the values of table by the keyring term that sealed them.
func termsInStore(t *testing.T, n *testNode, table string) map[uint32]uint64 {
	t.Helper()
	page, err := n.store.List(bg, table, raftstore.ListOptions{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]uint64{}
	for _, kv := range page.Items {
		out[binary.BigEndian.Uint32(kv.Value[macSize:])]++
	}
	return out
}

func TestRotationConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg RotationConfig
		ok  bool
	}{
		{DefaultRotationConfig(), true},
		{RotationConfig{MaxEncryptions: MinRotationEncryptions}, true},
		{RotationConfig{MaxEncryptions: MaxRotationEncryptions, Interval: MinRotationInterval}, true},
		{RotationConfig{MaxEncryptions: MinRotationEncryptions - 1}, false},
		{RotationConfig{MaxEncryptions: MaxRotationEncryptions + 1}, false},
		{RotationConfig{MaxEncryptions: 1 << 32}, false},
		{RotationConfig{MaxEncryptions: 1 << 30, Interval: time.Hour}, false},
		{RotationConfig{MaxEncryptions: 1 << 30, Interval: -time.Hour}, false},
	} {
		if err := c.cfg.Validate(); (err == nil) != c.ok || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", c.cfg, err)
		}
	}
	n := newNode(t)
	if err := n.b.SetRotationConfig(bg, RotationConfig{MaxEncryptions: 10}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetRotationConfig(10) = %v", err)
	}
	if c, err := n.b.RotationConfig(bg); err != nil || c != DefaultRotationConfig() {
		t.Fatalf("config after a refused change = %+v, %v", c, err)
	}
}

// TestKeyringRotatesAfterMaxEncryptions writes through two nodes of one
// cluster: no term may seal more values than the limit, the stored count
// must never be below the values a term sealed, and every value still
// decrypts after the rotations.
func TestKeyringRotatesAfterMaxEncryptions(t *testing.T) {
	a := newNode(t)
	b := a.peer(t)
	const limit = 64
	setRotation(t, a, RotationConfig{MaxEncryptions: limit})
	a.b.CreateTable(bg, "app")
	const writes = 300
	for i := range writes {
		n := a
		if i%3 == 0 {
			n = b
		}
		if err := n.b.Put(bg, "app", fmt.Appendf(nil, "k%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	got := termsInStore(t, a, "app")
	_, usage, err := a.b.readUsage(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < writes/limit {
		t.Fatalf("values spread over %d terms, want at least %d: %v", len(got), writes/limit, got)
	}
	for term, sealed := range got {
		if sealed > limit {
			t.Errorf("term %d sealed %d values, limit %d", term, sealed, limit)
		}
		if usage.Terms[term] < sealed {
			t.Errorf("term %d: stored count %d below the %d values it sealed", term, usage.Terms[term], sealed)
		}
	}
	for i := range writes {
		if _, err := b.b.Get(bg, "app", fmt.Appendf(nil, "k%03d", i)); err != nil {
			t.Fatalf("Get(k%03d) after rotations: %v", i, err)
		}
	}
	st, err := a.b.KeyStatus(bg)
	if err != nil || st.Term < 2 || st.Terms != int(st.Term) || st.Encryptions > limit || st.Rotation.MaxEncryptions != limit {
		t.Fatalf("KeyStatus = %+v, %v", st, err)
	}
}

// TestKeyringUseCountSurvivesRestart: a node that restarts (a new barrier
// over the same storage) goes on counting where the cluster was.
func TestKeyringUseCountSurvivesRestart(t *testing.T) {
	a := newNode(t)
	a.b.CreateTable(bg, "app")
	for i := range 10 {
		if err := a.b.Put(bg, "app", fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	before, err := a.b.KeyStatus(bg)
	if err != nil || before.Encryptions < 10 {
		t.Fatalf("KeyStatus = %+v, %v", before, err)
	}
	a.b.Seal()
	r := a.peer(t) // the restarted node
	if err := r.b.Put(bg, "app", []byte("after"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	after, err := r.b.KeyStatus(bg)
	if err != nil || after.Term != before.Term || after.Encryptions <= before.Encryptions {
		t.Fatalf("after restart: %+v (before %+v), %v", after, before, err)
	}
}

func TestKeyringRotatesByAge(t *testing.T) {
	a := newNode(t)
	b := a.peer(t)
	setRotation(t, a, RotationConfig{MaxEncryptions: 1 << 30, Interval: 48 * time.Hour})
	if term, rotated, err := a.b.RotateIfDue(bg); err != nil || rotated || term != 1 {
		t.Fatalf("RotateIfDue on a new keyring = %d, %v, %v", term, rotated, err)
	}
	a.clock.Advance(48 * time.Hour)
	if term, rotated, err := a.b.RotateIfDue(bg); err != nil || !rotated || term != 2 {
		t.Fatalf("RotateIfDue after the interval = %d, %v, %v", term, rotated, err)
	}
	// The other node, running the same check, sees a fresh term: no second rotation.
	if term, rotated, err := b.b.RotateIfDue(bg); err != nil || rotated || term != 2 {
		t.Fatalf("RotateIfDue on the peer = %d, %v, %v", term, rotated, err)
	}
	st, err := b.b.KeyStatus(bg)
	if err != nil || st.Term != 2 || !st.Installed.Equal(a.clock.Now().UTC()) {
		t.Fatalf("KeyStatus = %+v, %v", st, err)
	}
}

// TestManualRotationReachesOtherNodesBeforeTheyCountMore: a node that
// reserves encryptions follows a rotation made elsewhere first.
func TestManualRotationReachesOtherNodesBeforeTheyCountMore(t *testing.T) {
	a := newNode(t)
	b := a.peer(t)
	setRotation(t, a, RotationConfig{MaxEncryptions: 32}) // blocks of 2
	a.b.CreateTable(bg, "app")
	if err := b.b.Put(bg, "app", []byte("x"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.b.RotateKeyring(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := b.b.Put(bg, "app", fmt.Appendf(nil, "y%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if got := termsInStore(t, a, "app"); got[2] < 3 {
		t.Fatalf("peer kept sealing under the old term: %v", got)
	}
}

// TestCloseRemovesSealHook: a key manager that is replaced leaves nothing
// registered with the barrier, and refuses work.
func TestCloseRemovesSealHook(t *testing.T) {
	n := newNode(t)
	hooks := func() int {
		n.b.hookMu.Lock()
		defer n.b.hookMu.Unlock()
		return len(n.b.onSeal)
	}
	before := hooks()
	for range 3 {
		k, err := New(n.b, DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		k.Close()
		k.Close()
		if _, err := k.CreateKey(bg, "after-close", KeyOptions{}); !errors.Is(err, ErrSealed) {
			t.Fatalf("CreateKey on a closed key manager: %v", err)
		}
	}
	if got := hooks(); got != before {
		t.Fatalf("%d seal hooks after three key managers came and went, want %d", got, before)
	}
	// The remaining key manager still hears the seal.
	if _, err := n.k.CreateKey(bg, "k", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	n.b.Seal()
	if _, err := n.k.Key(bg, "k"); !errors.Is(err, ErrSealed) {
		t.Fatalf("after seal: %v", err)
	}
}
