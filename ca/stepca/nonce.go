package stepca

import (
	"container/heap"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"sync"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/smallstep/certificates/acme"
)

// Nonces are stateless: base64url(version || expiry || random || mac), mac
// a truncated HMAC-SHA256 of the rest under a key every node shares (kept
// through Storage, made once). Any node verifies any node's nonce, so a
// client spread over nodes never gets badNonce, and issuing one costs no
// write. Replay within a node is refused by a set of the nonces used there,
// kept until they expire. custos serves ACME on the leader only (followers
// forward), so that node's set sees every use; after a leader change a nonce
// used on the old leader could be used once more within its lifetime, which
// a valid JWS signature still has to accompany.
//
// Step-ca consumes a nonce before it checks the signature, so anyone can
// fill the set. It is bounded: past maxUsedNonces the entries that expire
// first are dropped and every nonce expiring no later than they did is
// refused from then on (a floor), so a dropped nonce can never be replayed;
// under such a flood an honest client may get badNonce for an old nonce,
// and retries with a fresh one, as RFC 8555 clients do.
const (
	nonceVersion = 1
	nonceRandLen = 16
	nonceMACLen  = 16
	nonceLen     = 1 + 8 + nonceRandLen + nonceMACLen

	// maxUsedNonces bounds the used set: about 10 MiB.
	maxUsedNonces = 1 << 16
)

type nonces struct {
	key      []byte
	lifetime time.Duration
	clock    kms.Clock
	max      int

	mu    sync.Mutex
	used  map[[nonceLen]byte]struct{}
	byExp expiries // the used set again, soonest expiry first
	floor int64    // nonces expiring at or before it are refused
}

func newNonces(key []byte, lifetime time.Duration, clock kms.Clock) *nonces {
	return &nonces{key: key, lifetime: lifetime, clock: clock, max: maxUsedNonces, used: map[[nonceLen]byte]struct{}{}}
}

// usedNonce is an entry of the used set.
type usedNonce struct {
	exp   int64 // unix seconds
	nonce [nonceLen]byte
}

// expiries is a min-heap of used nonces by expiry.
type expiries []usedNonce

func (h expiries) Len() int           { return len(h) }
func (h expiries) Less(i, j int) bool { return h[i].exp < h[j].exp }
func (h expiries) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiries) Push(x any)        { *h = append(*h, x.(usedNonce)) }
func (h *expiries) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (n *nonces) mac(b []byte) []byte {
	m := hmac.New(sha256.New, n.key)
	m.Write(b)
	return m.Sum(nil)[:nonceMACLen]
}

// create returns a fresh nonce.
func (n *nonces) create() (string, error) {
	b := make([]byte, 1+8, nonceLen)
	b[0] = nonceVersion
	binary.BigEndian.PutUint64(b[1:], uint64(n.clock.Now().Add(n.lifetime).Unix()))
	r := make([]byte, nonceRandLen)
	if _, err := rand.Read(r); err != nil {
		return "", err
	}
	b = append(b, r...)
	b = append(b, n.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// use accepts a nonce once: made with the shared key, not expired, and not
// used on this node before.
func (n *nonces) use(s string) error {
	bad := func(why string) error { return acme.NewDetailedError(acme.ErrorBadNonceType, "nonce %s", why) }
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != nonceLen || b[0] != nonceVersion {
		return bad("is malformed")
	}
	body, tag := b[:nonceLen-nonceMACLen], b[nonceLen-nonceMACLen:]
	if !hmac.Equal(tag, n.mac(body)) {
		return bad("is not one of ours")
	}
	exp := int64(binary.BigEndian.Uint64(b[1:9]))
	now := n.clock.Now().Unix()
	if exp <= now {
		return bad("has expired")
	}
	var k [nonceLen]byte
	copy(k[:], b)
	n.mu.Lock()
	defer n.mu.Unlock()
	for len(n.byExp) > 0 && n.byExp[0].exp <= now {
		delete(n.used, heap.Pop(&n.byExp).(usedNonce).nonce)
	}
	if exp <= n.floor {
		return bad("is too old; use a fresh one")
	}
	if _, dup := n.used[k]; dup {
		return bad("was used already")
	}
	n.used[k] = struct{}{}
	heap.Push(&n.byExp, usedNonce{exp: exp, nonce: k})
	for len(n.used) > n.max {
		old := heap.Pop(&n.byExp).(usedNonce)
		delete(n.used, old.nonce)
		n.floor = max(n.floor, old.exp)
	}
	return nil
}

// CreateNonce returns a stateless nonce.
func (d *acmeDB) CreateNonce(context.Context) (acme.Nonce, error) {
	s, err := d.nonces.create()
	if err != nil {
		return "", acme.WrapErrorISE(err, "error creating nonce")
	}
	return acme.Nonce(s), nil
}

// DeleteNonce consumes a nonce, or fails with badNonce.
func (d *acmeDB) DeleteNonce(_ context.Context, n acme.Nonce) error {
	return d.nonces.use(string(n))
}
