package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/kms"
)

// Ceremonies gather a quorum of unseal shares, one per call, to make a
// root token (generate-root), split a new unseal key (rekey) or replace
// the root key (rotate-root). What they promise:
//   - init returns a random nonce, once; every share and the cancel must
//     name it, so that nobody who was not given it can add to, finish or
//     reset a ceremony. The nonce is compared in constant time and never
//     shown by the status call.
//   - A share whose index was already given is refused.
//   - generate-root returns the token XOR'd with a one-time pad the
//     initiator chose at init (as Vault does): whoever submits the last
//     share learns nothing without the pad.
//   - rekey returns the new shares only in the answer to the update that
//     completes it (which names the nonce), optionally each encrypted to
//     one holder's age public key; they are not kept.
//   - One ceremony of each kind at a time, per node; one left idle for
//     ceremonyIdle ends by itself, so a ceremony whose nonce was lost (or
//     one started by someone else, for the public generate-root) does not
//     block the next for ever.
//   - A wrong set of shares ends the round: progress starts again under
//     the same nonce. Sealing the node ends every ceremony.

// ceremonyIdle is how long a ceremony lives without a new share.
const ceremonyIdle = time.Hour

// rootTokenLen is the length of a root token, and so of the OTP.
var rootTokenLen = len(auth.TokenPrefix) + base64.RawURLEncoding.EncodedLen(32)

type ceremony struct {
	kind    string
	nonce   string
	started time.Time
	touched time.Time
	shares  [][]byte

	otp        []byte          // generate-root
	next       kms.SealConfig  // rekey
	recipients []age.Recipient // rekey; empty: shares in the clear
}

// ceremonies holds this node's ceremonies in progress, by kind.
type ceremonies struct {
	mu  sync.Mutex
	cur map[string]*ceremony
	now func() time.Time // nil: the wall clock
}

// clock tells the time; c.mu must be held.
func (c *ceremonies) clock() time.Time {
	if c.now != nil {
		return c.now().UTC()
	}
	return time.Now().UTC()
}

// activeLocked returns the ceremony of kind in progress, dropping one
// that has been idle too long. c.mu must be held.
func (c *ceremonies) activeLocked(kind string, now time.Time) *ceremony {
	cer := c.cur[kind]
	if cer != nil && now.Sub(cer.touched) > ceremonyIdle {
		cer.wipe()
		delete(c.cur, kind)
		return nil
	}
	return cer
}

// reset ends every ceremony and wipes its shares: a sealed node holds no
// secret.
func (c *ceremonies) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for kind, cer := range c.cur {
		cer.wipe()
		delete(c.cur, kind)
	}
}

func (cer *ceremony) wipe() {
	for _, s := range cer.shares {
		clear(s)
	}
	cer.shares = nil
	clear(cer.otp)
}

func (cer *ceremony) nonceMatches(nonce string) bool {
	return subtle.ConstantTimeCompare([]byte(cer.nonce), []byte(nonce)) == 1
}

func checkKind(kind string) error {
	switch kind {
	case api.CeremonyGenerateRoot, api.CeremonyRekey, api.CeremonyRotateRoot:
		return nil
	}
	return fmt.Errorf("%w: unknown ceremony %q", ErrInvalid, kind)
}

// ceremonySeal returns the seal status of an initialised, unsealed node.
func (n *Node) ceremonySeal(ctx context.Context) (kms.SealStatus, error) {
	st, err := n.barrier.Status(ctx)
	if err != nil {
		return st, err
	}
	if !st.Initialized {
		return st, ErrNotInitialized
	}
	if st.Sealed {
		return st, ErrSealed
	}
	return st, nil
}

// newCeremony checks the init request of kind and builds the ceremony.
func (n *Node) newCeremony(kind string, st kms.SealStatus, req api.CeremonyRequest) (*ceremony, error) {
	cer := &ceremony{kind: kind}
	if req.Nonce != "" || req.Key != "" {
		return nil, fmt.Errorf("%w: init takes no nonce and no share", ErrInvalid)
	}
	if kind != api.CeremonyGenerateRoot && req.OTP != "" {
		return nil, fmt.Errorf("%w: otp is for generate-root", ErrInvalid)
	}
	if kind != api.CeremonyRekey && (req.SecretShares != 0 || req.SecretThreshold != 0 || len(req.Recipients) != 0) {
		return nil, fmt.Errorf("%w: secret_shares, secret_threshold and recipients are for rekey", ErrInvalid)
	}
	if st.Type != kms.SealShamir && kind != api.CeremonyRotateRoot {
		return nil, fmt.Errorf("%w: %s needs unseal shares; this cluster unseals from a key file", ErrInvalid, kind)
	}
	switch kind {
	case api.CeremonyGenerateRoot:
		otp, err := base64.StdEncoding.DecodeString(req.OTP)
		if err != nil || len(otp) != rootTokenLen {
			return nil, fmt.Errorf("%w: otp must be the base64 of %d random bytes", ErrInvalid, rootTokenLen)
		}
		cer.otp = otp
	case api.CeremonyRekey:
		cer.next = kms.SealConfig{Shares: req.SecretShares, Threshold: req.SecretThreshold}
		if err := cer.next.Validate(); err != nil {
			return nil, err
		}
		if len(req.Recipients) != 0 && len(req.Recipients) != req.SecretShares {
			return nil, fmt.Errorf("%w: give one recipient per new share (%d), got %d", ErrInvalid, req.SecretShares, len(req.Recipients))
		}
		for i, s := range req.Recipients {
			r, err := age.ParseX25519Recipient(s)
			if err != nil {
				return nil, fmt.Errorf("%w: recipient %d is not an age public key (age1...)", ErrInvalid, i+1)
			}
			cer.recipients = append(cer.recipients, r)
		}
	}
	return cer, nil
}

// CeremonyInit starts a ceremony and returns its nonce, once. A key-file
// cluster's rotate-root needs no shares and completes at once.
func (n *Node) CeremonyInit(ctx context.Context, kind string, req api.CeremonyRequest) (api.CeremonyStatus, error) {
	if err := checkKind(kind); err != nil {
		return api.CeremonyStatus{}, err
	}
	st, err := n.ceremonySeal(ctx)
	if err != nil {
		return api.CeremonyStatus{}, err
	}
	cer, err := n.newCeremony(kind, st, req)
	if err != nil {
		return api.CeremonyStatus{}, err
	}
	if kind == api.CeremonyRotateRoot && st.Type == kms.SealKeyFile {
		if err := n.barrier.RotateRootKey(ctx, kms.UnsealKey{KeyFile: n.cfg.UnsealKeyFile}); err != nil {
			return api.CeremonyStatus{}, fmt.Errorf("rotate root key: %w", err)
		}
		return n.rotateRootDone(ctx, kind)
	}
	var b [16]byte
	rand.Read(b[:])
	n.cer.mu.Lock()
	defer n.cer.mu.Unlock()
	now := n.cer.clock()
	cer.nonce, cer.started, cer.touched = hex.EncodeToString(b[:]), now, now
	if n.cer.activeLocked(kind, now) != nil {
		cer.wipe()
		return api.CeremonyStatus{}, fmt.Errorf("%w: a %s ceremony is already in progress: finish it, or cancel it with its nonce", ErrConflict, kind)
	}
	if n.cer.cur == nil {
		n.cer.cur = map[string]*ceremony{}
	}
	n.cer.cur[kind] = cer
	out := cer.status(st.Threshold)
	out.Nonce = cer.nonce
	return out, nil
}

func (cer *ceremony) status(required int) api.CeremonyStatus {
	out := api.CeremonyStatus{Kind: cer.kind, Started: true, StartedAt: cer.started, Progress: len(cer.shares), Required: required}
	if cer.kind == api.CeremonyRekey {
		out.SecretShares, out.SecretThreshold = cer.next.Shares, cer.next.Threshold
	}
	if cer.kind == api.CeremonyGenerateRoot {
		out.OTPLength = rootTokenLen
	}
	return out
}

// CeremonyStatus reports the ceremony of kind in progress, without its nonce.
func (n *Node) CeremonyStatus(ctx context.Context, kind string) (api.CeremonyStatus, error) {
	if err := checkKind(kind); err != nil {
		return api.CeremonyStatus{}, err
	}
	st, err := n.ceremonySeal(ctx)
	if err != nil {
		return api.CeremonyStatus{}, err
	}
	n.cer.mu.Lock()
	defer n.cer.mu.Unlock()
	if cer := n.cer.activeLocked(kind, n.cer.clock()); cer != nil {
		return cer.status(st.Threshold), nil
	}
	out := api.CeremonyStatus{Kind: kind, Required: st.Threshold}
	if kind == api.CeremonyGenerateRoot {
		out.OTPLength = rootTokenLen
	}
	return out, nil
}

// CeremonyCancel ends the ceremony of kind if req names its nonce.
func (n *Node) CeremonyCancel(_ context.Context, kind string, req api.CeremonyRequest) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	n.cer.mu.Lock()
	defer n.cer.mu.Unlock()
	cer, err := n.cer.lookupLocked(kind, req.Nonce)
	if err != nil {
		return err
	}
	cer.wipe()
	delete(n.cer.cur, kind)
	return nil
}

// lookupLocked returns the ceremony of kind if nonce names it.
func (c *ceremonies) lookupLocked(kind, nonce string) (*ceremony, error) {
	cer := c.activeLocked(kind, c.clock())
	if cer == nil {
		return nil, fmt.Errorf("%w: no %s ceremony in progress", ErrNotFound, kind)
	}
	if !cer.nonceMatches(nonce) {
		return nil, fmt.Errorf("%w: the nonce does not name the %s ceremony in progress", ErrForbidden, kind)
	}
	return cer, nil
}

// CeremonyUpdate adds one share to the ceremony req.Nonce names; the share
// that reaches the threshold completes it, and only that answer carries
// the result.
func (n *Node) CeremonyUpdate(ctx context.Context, kind string, req api.CeremonyRequest) (api.CeremonyStatus, error) {
	if err := checkKind(kind); err != nil {
		return api.CeremonyStatus{}, err
	}
	st, err := n.ceremonySeal(ctx)
	if err != nil {
		return api.CeremonyStatus{}, err
	}
	share, err := parseShare(req.Key)
	if err != nil {
		return api.CeremonyStatus{}, err
	}
	n.cer.mu.Lock()
	cer, err := n.cer.lookupLocked(kind, req.Nonce)
	if err != nil {
		n.cer.mu.Unlock()
		clear(share)
		return api.CeremonyStatus{}, err
	}
	for _, p := range cer.shares {
		// The last byte of a share is its index: a share given twice, or
		// another with the same index, cannot add to the quorum.
		if p[len(p)-1] == share[len(share)-1] {
			n.cer.mu.Unlock()
			clear(share)
			return api.CeremonyStatus{}, fmt.Errorf("%w: this share was already given in this ceremony", ErrInvalid)
		}
	}
	cer.shares = append(cer.shares, share)
	cer.touched = n.cer.clock()
	out := cer.status(st.Threshold)
	if len(cer.shares) < st.Threshold {
		n.cer.mu.Unlock()
		return out, nil
	}
	shares := cer.shares
	cer.shares = nil
	n.cer.mu.Unlock()
	defer func() {
		for _, s := range shares {
			clear(s)
		}
	}()

	out, err = n.completeCeremony(ctx, cer, shares)
	if err != nil {
		return api.CeremonyStatus{}, err
	}
	n.cer.mu.Lock()
	if n.cer.cur[kind] == cer {
		delete(n.cer.cur, kind)
	}
	cer.wipe()
	n.cer.mu.Unlock()
	return out, nil
}

// completeCeremony does what the ceremony was for, with a quorum of shares.
func (n *Node) completeCeremony(ctx context.Context, cer *ceremony, shares [][]byte) (api.CeremonyStatus, error) {
	key := kms.UnsealKey{Shares: shares}
	switch cer.kind {
	case api.CeremonyGenerateRoot:
		svc, err := n.Services()
		if err != nil {
			return api.CeremonyStatus{}, err
		}
		if err := n.barrier.VerifyUnsealKey(ctx, key); err != nil {
			return api.CeremonyStatus{}, fmt.Errorf("generate-root: %w", err)
		}
		tok, _, err := svc.Auth.CreateRootToken(ctx, "generated-root")
		if err != nil {
			return api.CeremonyStatus{}, fmt.Errorf("generate-root: %w", err)
		}
		if len(tok) != len(cer.otp) {
			return api.CeremonyStatus{}, fmt.Errorf("generate-root: token is %d bytes, the OTP %d", len(tok), len(cer.otp))
		}
		enc := []byte(tok)
		subtle.XORBytes(enc, enc, cer.otp)
		out := api.CeremonyStatus{Kind: cer.kind, Started: true, StartedAt: cer.started, Complete: true, OTPLength: rootTokenLen}
		out.EncodedToken = base64.StdEncoding.EncodeToString(enc)
		clear(enc)
		return out, nil
	case api.CeremonyRekey:
		res, err := n.barrier.Rekey(ctx, key, cer.next)
		if err != nil {
			return api.CeremonyStatus{}, fmt.Errorf("rekey: %w", err)
		}
		out := cer.status(len(shares))
		out.Complete, out.Progress = true, len(shares)
		for i, sh := range res.Shares {
			h := hex.EncodeToString(sh)
			clear(sh)
			if len(cer.recipients) == 0 {
				out.Keys = append(out.Keys, h)
				continue
			}
			ct, err := encryptTo(cer.recipients[i], h)
			if err != nil {
				// The unseal key has changed already: this is internal.
				return api.CeremonyStatus{}, fmt.Errorf("rekey: encrypt share %d: %w", i+1, err)
			}
			out.KeysEncrypted = append(out.KeysEncrypted, ct)
		}
		return out, nil
	default: // api.CeremonyRotateRoot
		if err := n.barrier.RotateRootKey(ctx, key); err != nil {
			return api.CeremonyStatus{}, fmt.Errorf("rotate root key: %w", err)
		}
		out, err := n.rotateRootDone(ctx, cer.kind)
		out.StartedAt, out.Progress = cer.started, len(shares)
		return out, err
	}
}

func (n *Node) rotateRootDone(ctx context.Context, kind string) (api.CeremonyStatus, error) {
	st, err := n.barrier.Status(ctx)
	if err != nil {
		return api.CeremonyStatus{}, err
	}
	return api.CeremonyStatus{Kind: kind, Started: true, Complete: true, Required: st.Threshold, RootGeneration: st.RootGen}, nil
}

// encryptTo encrypts s to r, ASCII-armored.
func encryptTo(r age.Recipient, s string) (string, error) {
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		return "", err
	}
	if _, err := w.Write([]byte(s)); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// KeyStatus describes the barrier keyring's active term.
func (n *Node) KeyStatus(ctx context.Context) (api.KeyStatus, error) {
	st, err := n.barrier.KeyStatus(ctx)
	if err != nil {
		return api.KeyStatus{}, err
	}
	return api.KeyStatus{
		Term: st.Term, InstallTime: st.Installed, Age: time.Since(st.Installed).Truncate(time.Second).String(),
		Encryptions: st.Encryptions, Terms: st.Terms, RotationConfig: rotationConfig(st.Rotation),
	}, nil
}

// RotateKeyring adds a keyring term; new values are sealed under it.
func (n *Node) RotateKeyring(ctx context.Context) (api.KeyStatus, error) {
	if _, err := n.barrier.RotateKeyring(ctx); err != nil {
		return api.KeyStatus{}, err
	}
	return n.KeyStatus(ctx)
}

func rotationConfig(c kms.RotationConfig) api.RotationConfig {
	return api.RotationConfig{MaxEncryptions: c.MaxEncryptions, Interval: c.Interval.String()}
}

// RotationConfig reports when the keyring rotates by itself.
func (n *Node) RotationConfig(ctx context.Context) (api.RotationConfig, error) {
	if n.barrier.Sealed() {
		return api.RotationConfig{}, ErrSealed
	}
	c, err := n.barrier.RotationConfig(ctx)
	if err != nil {
		return api.RotationConfig{}, err
	}
	return rotationConfig(c), nil
}

// SetRotationConfig changes when the keyring rotates by itself.
func (n *Node) SetRotationConfig(ctx context.Context, c api.RotationConfig) (api.RotationConfig, error) {
	d, err := time.ParseDuration(c.Interval)
	if err != nil {
		return api.RotationConfig{}, fmt.Errorf("%w: interval: %v", ErrInvalid, err)
	}
	cfg := kms.RotationConfig{MaxEncryptions: c.MaxEncryptions, Interval: d}
	if err := n.barrier.SetRotationConfig(ctx, cfg); err != nil {
		return api.RotationConfig{}, err
	}
	return rotationConfig(cfg), nil
}

// maintainBarrier reloads the keyring now and then, so that this node
// follows rotations made elsewhere, and on the leader rotates it when due.
func (n *Node) maintainBarrier(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n.barrier.Sealed() {
			continue
		}
		err := n.barrier.ReloadKeyring(ctx)
		if err == nil && n.store.IsLeader() {
			var rotated bool
			var term uint32
			if term, rotated, err = n.barrier.RotateIfDue(ctx); rotated {
				n.log.Info("barrier keyring rotated", "term", term)
			}
		}
		if err != nil && ctx.Err() == nil {
			n.log.Warn("barrier keyring maintenance", "error", err)
		}
	}
}
