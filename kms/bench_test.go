package kms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"
	"time"
)

// BenchmarkEncrypt measures Encrypt of 1 KiB under the default key type,
// reporting ops/s and ratios to two references timed in the same run,
// interleaved with it in blocks so that both see the same machine load:
//
//	x_bare: a bare AES-256-GCM encryption as a caller does it by hand: a
//	        random nonce from crypto/rand and Seal into a new buffer;
//	x_seal: cipher.AEAD.Seal alone, fixed nonce, reused buffer.
//
// The goal is x_bare <= 1.5. Encrypt returns the binary form; the text form
// (base64) is the transport's cost, as it is for the bare caller.
func BenchmarkEncrypt(b *testing.B) {
	const block = 1024
	pt := make([]byte, 1024)
	n := newNode(b)
	k, err := New(n.b, DefaultConfig()) // the wall clock, as in production
	if err != nil {
		b.Fatal(err)
	}
	if _, err := k.CreateKey(bg, "bench", KeyOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := k.Encrypt(bg, "bench", pt, CryptOptions{}); err != nil {
		b.Fatal(err)
	}
	aead := benchGCM(b)
	fixedNonce := make([]byte, aead.NonceSize())
	out := make([]byte, 0, len(pt)+aead.Overhead())
	var bare, sealOnly time.Duration
	var refs int
	calls, started := n.store.calls.Load(), time.Now()
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := k.Encrypt(bg, "bench", pt, CryptOptions{}); err != nil {
			b.Fatal(err)
		}
		if i++; i%block != 0 {
			continue
		}
		b.StopTimer()
		t0 := time.Now()
		for range block {
			nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(pt)+aead.Overhead())
			rand.Read(nonce)
			_ = aead.Seal(nonce, nonce, pt, nil)
		}
		t1 := time.Now()
		for range block {
			out = aead.Seal(out[:0], fixedNonce, pt, nil)
		}
		bare, sealOnly, refs = bare+t1.Sub(t0), sealOnly+time.Since(t1), refs+block
		b.StartTimer()
	}
	// The only storage reads allowed are the key metadata refreshes, one
	// per CacheTTL.
	if got, allowed := n.store.calls.Load()-calls, int64(time.Since(started)/DefaultConfig().CacheTTL); got > allowed {
		b.Fatalf("the encrypt path made %d storage calls in %v", got, time.Since(started))
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(1e9/ns, "ops/s")
	if refs > 0 {
		b.ReportMetric(ns/(float64(bare.Nanoseconds())/float64(refs)), "x_bare")
		b.ReportMetric(ns/(float64(sealOnly.Nanoseconds())/float64(refs)), "x_seal")
	}
}

func benchGCM(b *testing.B) cipher.AEAD {
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	return aead
}
