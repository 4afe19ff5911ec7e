package stepca

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"go.step.sm/crypto/jose"
)

// MetaTable holds what custos keeps for step-ca beside step's own tables:
// the nonce key and the JWK provisioner's key, made once by whichever node
// starts first and read by the others (through the barrier: encrypted).
const MetaTable = "stepca.meta"

var (
	recNonceKey = []byte("nonce-key")
	recJWKPref  = "jwk/"
)

// loadOrCreate returns the record at key, made by mk and inserted if absent.
// Nodes starting at once agree: the insert is compare-and-swap, and the
// loser takes the winner's record.
func loadOrCreate(ctx context.Context, store kms.Storage, key []byte, mk func() ([]byte, error)) ([]byte, error) {
	v, err := store.Get(ctx, MetaTable, key)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, raftstore.ErrNotFound) {
		return nil, err
	}
	nv, err := mk()
	if err != nil {
		return nil, err
	}
	swapped, cur, err := store.CompareAndSwap(ctx, MetaTable, key, nil, nv)
	switch {
	case err != nil:
		return nil, err
	case swapped:
		return nv, nil
	}
	return cur, nil
}

func nonceKey(ctx context.Context, store kms.Storage) ([]byte, error) {
	k, err := loadOrCreate(ctx, store, recNonceKey, func() ([]byte, error) {
		k := make([]byte, 32)
		_, err := rand.Read(k)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("stepca: nonce key: %w", err)
	}
	if len(k) != 32 {
		return nil, errors.New("stepca: nonce key: stored key is not 32 bytes")
	}
	return k, nil
}

// jwkRecord is the JWK provisioner's key: public, and private encrypted
// under the provisioner password (PBES2, as step's CLI expects to fetch it).
type jwkRecord struct {
	Public       *jose.JSONWebKey `json:"public"`
	EncryptedKey string           `json:"encrypted_key"`
}

// provisionerJWK returns the JWK provisioner's public key and encrypted
// private key, making them on first use. The password is checked against
// the stored key, so a node started with the wrong one fails at once.
func provisionerJWK(ctx context.Context, store kms.Storage, name string, password []byte) (*jose.JSONWebKey, string, error) {
	b, err := loadOrCreate(ctx, store, []byte(recJWKPref+name), func() ([]byte, error) {
		pub, jwe, err := jose.GenerateDefaultKeyPair(password)
		if err != nil {
			return nil, err
		}
		enc, err := jwe.CompactSerialize()
		if err != nil {
			return nil, err
		}
		return json.Marshal(jwkRecord{Public: pub, EncryptedKey: enc})
	})
	if err != nil {
		return nil, "", fmt.Errorf("stepca: JWK provisioner %q: %w", name, err)
	}
	var rec jwkRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Public == nil {
		return nil, "", fmt.Errorf("stepca: JWK provisioner %q: malformed record", name)
	}
	if _, err := jose.Decrypt([]byte(rec.EncryptedKey), jose.WithPassword(password)); err != nil {
		return nil, "", fmt.Errorf("stepca: JWK provisioner %q: JWKPassword does not decrypt its key", name)
	}
	return rec.Public, rec.EncryptedKey, nil
}
