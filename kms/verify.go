package kms

import "context"

// VerifyUnsealKey checks that cur recovers the unseal key (a quorum of
// shares, or the key file) without changing anything: operations that need
// the key holders' consent (generate-root) ask for it. A wrong key gives
// ErrBadUnsealKey.
func (b *Barrier) VerifyUnsealKey(ctx context.Context, cur UnsealKey) error {
	_, _, key, root, err := b.proveUnsealKey(ctx, cur)
	if err != nil {
		return err
	}
	clear(key)
	clear(root)
	return nil
}
