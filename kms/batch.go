package kms

import (
	"context"
	"fmt"
)

// BatchOp is the operation of a Batch call.
type BatchOp int

// Batch operations.
const (
	BatchEncrypt BatchOp = iota + 1
	BatchDecrypt
	BatchRewrap
	BatchSign
	BatchVerify
	BatchHMAC
	BatchVerifyHMAC
)

// BatchItem is one input of a Batch call.
type BatchItem struct {
	// Input is the plaintext (encrypt), ciphertext (decrypt, rewrap) or
	// message (sign, verify, hmac, verify-hmac).
	Input []byte
	// Signature is the signature or HMAC to check (verify, verify-hmac).
	Signature []byte
	Crypt     CryptOptions // encrypt, decrypt, rewrap
	Sign      SignOptions  // sign, verify, hmac, verify-hmac
}

// BatchResult is the outcome of one item: Output (ciphertext, plaintext,
// signature or HMAC) and, for verify operations, Valid; or Err.
type BatchResult struct {
	Output []byte
	Valid  bool
	Err    error
}

// Batch runs one operation over many items with the named key. Every item
// gets its own result: one bad item fails alone. Batch itself fails only
// for an unknown operation or more than Config.MaxBatch items.
func (k *KMS) Batch(ctx context.Context, name string, op BatchOp, items []BatchItem) ([]BatchResult, error) {
	if op < BatchEncrypt || op > BatchVerifyHMAC {
		return nil, fmt.Errorf("%w: unknown batch operation %d", ErrInvalid, op)
	}
	if len(items) > k.cfg.MaxBatch {
		return nil, fmt.Errorf("%w: a batch holds at most %d items", ErrInvalid, k.cfg.MaxBatch)
	}
	out := make([]BatchResult, len(items))
	for i, it := range items {
		out[i] = k.do(ctx, name, op, it)
	}
	return out, nil
}

// One runs op over one item, as Batch runs it over each of its items: a
// request of one item needs no slices.
func (k *KMS) One(ctx context.Context, name string, op BatchOp, it BatchItem) BatchResult {
	if op < BatchEncrypt || op > BatchVerifyHMAC {
		return BatchResult{Err: fmt.Errorf("%w: unknown batch operation %d", ErrInvalid, op)}
	}
	return k.do(ctx, name, op, it)
}

func (k *KMS) do(ctx context.Context, name string, op BatchOp, it BatchItem) (r BatchResult) {
	switch op {
	case BatchEncrypt:
		r.Output, r.Err = k.Encrypt(ctx, name, it.Input, it.Crypt)
	case BatchDecrypt:
		r.Output, r.Err = k.Decrypt(ctx, name, it.Input, it.Crypt)
	case BatchRewrap:
		r.Output, r.Err = k.Rewrap(ctx, name, it.Input, it.Crypt)
	case BatchSign:
		r.Output, r.Err = k.Sign(ctx, name, it.Input, it.Sign)
	case BatchVerify:
		r.Valid, r.Err = k.Verify(ctx, name, it.Input, it.Signature, it.Sign)
	case BatchHMAC:
		r.Output, r.Err = k.HMAC(ctx, name, it.Input, it.Sign)
	case BatchVerifyHMAC:
		r.Valid, r.Err = k.VerifyHMAC(ctx, name, it.Input, it.Signature, it.Sign)
	}
	return r
}
