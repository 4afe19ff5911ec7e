package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"golang.org/x/crypto/ocsp"
)

// quorumCounter counts what a CA asks of the cluster: linearizable reads
// (a round to the leader each) and writes. It passes everything on to the
// real barrier.
type quorumCounter struct {
	kms.Storage
	reads, writes atomic.Int64
}

func (q *quorumCounter) Get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) ([]byte, error) {
	if len(opts) == 0 {
		q.reads.Add(1)
	}
	return q.Storage.Get(ctx, table, key, opts...)
}

func (q *quorumCounter) List(ctx context.Context, table string, o raftstore.ListOptions, opts ...raftstore.ReadOption) (raftstore.ListPage, error) {
	if len(opts) == 0 {
		q.reads.Add(1)
	}
	return q.Storage.List(ctx, table, o, opts...)
}

func (q *quorumCounter) Put(ctx context.Context, table string, key, value []byte) error {
	q.writes.Add(1)
	return q.Storage.Put(ctx, table, key, value)
}

func (q *quorumCounter) Delete(ctx context.Context, table string, key []byte) error {
	q.writes.Add(1)
	return q.Storage.Delete(ctx, table, key)
}

func (q *quorumCounter) CompareAndSwap(ctx context.Context, table string, key, old, new []byte) (bool, []byte, error) {
	q.writes.Add(1)
	return q.Storage.CompareAndSwap(ctx, table, key, old, new)
}

func (q *quorumCounter) Txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error) {
	q.writes.Add(1)
	return q.Storage.Txn(ctx, ops)
}

// ocspAsk sends an OCSP request for cert to c and parses the answer.
func ocspAsk(t testing.TB, c *CA, cert, inter *x509.Certificate, h crypto.Hash) ([]byte, *ocsp.Response) {
	t.Helper()
	req, err := ocsp.CreateRequest(cert, inter, &ocsp.RequestOptions{Hash: h})
	must(t, err)
	der, err := c.OCSP(bg, req)
	must(t, err)
	resp, err := ocsp.ParseResponseForCert(der, cert, inter)
	must(t, err)
	return der, resp
}

// A flood of OCSP requests for one certificate costs one signature and
// nothing of the cluster; the answer is made again when half its validity
// is over, and at once after a revocation, on this node and on another.
func TestOCSPResponsesAreCachedAndRefreshedOnRevocation(t *testing.T) {
	c, s := newTestCA(t)
	good, other := issue(t, c, "good.example.com"), issue(t, c, "other.example.com")
	inter := good.Chain[0]

	// A second node over the same state: a follower, counted.
	q := &quorumCounter{Storage: s.barrier}
	cfg := s.newCAArgs()
	cfg.Storage, cfg.IsLeader = q, func() bool { return false }
	cfg.CacheTTL = time.Hour // however slow the machine, no re-read of the issuers in the flood
	follower := s.newCA(t, cfg)

	for _, n := range []*CA{c, follower} {
		first, resp := ocspAsk(t, n, good.Certificate, inter, crypto.SHA1)
		if resp.Status != ocsp.Good {
			t.Fatalf("status %d", resp.Status)
		}
		applied, reads, writes := s.store.AppliedIndex(), q.reads.Load(), q.writes.Load()
		var wg sync.WaitGroup
		answers := make([][]byte, 64)
		for i := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := ocsp.CreateRequest(good.Certificate, inter, &ocsp.RequestOptions{Hash: crypto.SHA1})
				answers[i], _ = n.OCSP(bg, req)
			}()
		}
		wg.Wait()
		for i, a := range answers {
			// ECDSA signatures are randomised: equal bytes mean one signature.
			if !bytes.Equal(a, first) {
				t.Fatalf("answer %d differs from the first: signed again", i)
			}
		}
		if got := s.store.AppliedIndex(); got != applied {
			t.Fatalf("the flood applied %d Raft entries", got-applied)
		}
		if n == follower && (q.reads.Load() != reads || q.writes.Load() != writes) {
			t.Fatalf("the flood made %d linearizable reads and %d writes", q.reads.Load()-reads, q.writes.Load()-writes)
		}
	}

	// Another hash algorithm is another CertID: its own response.
	sha256a, _ := ocspAsk(t, follower, good.Certificate, inter, crypto.SHA256)
	if sha256b, _ := ocspAsk(t, follower, good.Certificate, inter, crypto.SHA256); !bytes.Equal(sha256a, sha256b) {
		t.Fatal("SHA-256 request signed again")
	}

	// Revoking another certificate changes the epoch but not this answer.
	before, _ := ocspAsk(t, follower, good.Certificate, inter, crypto.SHA1)
	_, err := c.Revoke(bg, other.Serial, 0)
	must(t, err)
	if again, _ := ocspAsk(t, follower, good.Certificate, inter, crypto.SHA1); !bytes.Equal(again, before) {
		t.Fatal("a revocation of another certificate made this one be signed again")
	}
	if _, r := ocspAsk(t, follower, other.Certificate, inter, crypto.SHA1); r.Status != ocsp.Revoked {
		t.Fatalf("other: status %d after revocation", r.Status)
	}

	// Revoked on the leader: the very next answer on both nodes says so.
	_, err = c.Revoke(bg, good.Serial, 1)
	must(t, err)
	for name, n := range map[string]*CA{"leader": c, "follower": follower} {
		if _, r := ocspAsk(t, n, good.Certificate, inter, crypto.SHA1); r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
			t.Fatalf("%s: status %d reason %d after revocation", name, r.Status, r.RevocationReason)
		}
	}

	// Until half the validity has passed the same response; after, a new one.
	first, r1 := ocspAsk(t, follower, good.Certificate, inter, crypto.SHA1)
	s.clock.Add(cfg.OCSPValidity/2 - time.Minute)
	if same, _ := ocspAsk(t, follower, good.Certificate, inter, crypto.SHA1); !bytes.Equal(same, first) {
		t.Fatal("made again before half its validity")
	}
	s.clock.Add(2 * time.Minute)
	if _, r2 := ocspAsk(t, follower, good.Certificate, inter, crypto.SHA1); !r2.ThisUpdate.After(r1.ThisUpdate) || r2.Status != ocsp.Revoked {
		t.Fatalf("not made again past half its validity: thisUpdate %v, then %v", r1.ThisUpdate, r2.ThisUpdate)
	}
}

// The cache holds at most OCSPCacheSize responses, and a node that has not
// checked in with the cluster for CacheTTL does so once before answering.
func TestOCSPCacheIsBoundedAndSyncsOncePerCacheTTL(t *testing.T) {
	c, s := newTestCA(t)
	q := &quorumCounter{Storage: s.barrier}
	cfg := s.newCAArgs()
	cfg.Storage, cfg.OCSPCacheSize, cfg.CacheTTL = q, 3, time.Hour
	n := s.newCA(t, cfg)
	var certs []*Issued
	for i := range 8 {
		certs = append(certs, issue(t, c, fmt.Sprintf("c%d.example.com", i)))
	}
	inter := certs[0].Chain[0]
	ocspAsk(t, n, certs[0].Certificate, inter, crypto.SHA1) // reads the issuers and syncs
	reads := q.reads.Load()
	for _, is := range certs {
		ocspAsk(t, n, is.Certificate, inter, crypto.SHA1)
		if got := n.ocsp.size(); got > cfg.OCSPCacheSize {
			t.Fatalf("%d cached responses, limit %d", got, cfg.OCSPCacheSize)
		}
	}
	if got := q.reads.Load() - reads; got != 0 {
		t.Fatalf("%d linearizable reads within CacheTTL", got)
	}
	s.clock.Add(cfg.CacheTTL)
	ocspAsk(t, n, certs[0].Certificate, inter, crypto.SHA1)
	if got := q.reads.Load() - reads; got != 1 {
		t.Fatalf("%d linearizable reads after CacheTTL, want 1", got)
	}
}
