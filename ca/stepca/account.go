package stepca

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/smallstep/certificates/acme"
	"github.com/smallstep/nosql/database"
	"go.step.sm/crypto/jose"
)

// Accounts. Every JWS request that names its account (all but new-account
// and revocation by certificate key) reads the account, and step decodes
// the stored JSON and its JWK each time: about 2% of an ACME issuance's
// CPU on the node that serves it. GetAccount still reads the record on
// every call, so a deactivation or a new key is seen at once; what it
// saves is decoding bytes it decoded before (internal/decodecache).

// Step's tables of ACME accounts and of their key thumbprints
// (acme/db/nosql).
var (
	accountTable        = []byte("acme_accounts")
	accountByKeyIDTable = []byte("acme_keyID_accountID_index")
)

// stepAccount is step's stored account (acme/db/nosql's dbAccount), field
// for field.
type stepAccount struct {
	ID              string           `json:"id"`
	Key             *jose.JSONWebKey `json:"key"`
	Contact         []string         `json:"contact,omitempty"`
	Status          acme.Status      `json:"status"`
	LocationPrefix  string           `json:"locationPrefix"`
	ProvisionerID   string           `json:"provisionerID,omitempty"`
	ProvisionerName string           `json:"provisionerName"`
	CreatedAt       time.Time        `json:"createdAt"`
	DeactivatedAt   time.Time        `json:"deactivatedAt"`
}

// GetAccount is step's (acme/db/nosql): the account with this ID, or
// acme.ErrNotFound. Step's callers may change the account they get: each
// call returns a new one (the JWK, which nothing changes, is shared).
func (d *acmeDB) GetAccount(_ context.Context, id string) (*acme.Account, error) {
	raw, err := d.getAccountRecord(accountTable, id, "account")
	if err != nil {
		return nil, err
	}
	sa, err := d.accounts.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("error unmarshaling account %s into dbAccount: %w", id, err)
	}
	return &acme.Account{
		Status:          sa.Status,
		Contact:         slices.Clone(sa.Contact),
		Key:             sa.Key,
		ID:              sa.ID,
		LocationPrefix:  sa.LocationPrefix,
		ProvisionerID:   sa.ProvisionerID,
		ProvisionerName: sa.ProvisionerName,
	}, nil
}

// GetAccountByKeyID is step's: the account whose key has this thumbprint,
// through step's index, read with GetAccount.
func (d *acmeDB) GetAccountByKeyID(ctx context.Context, kid string) (*acme.Account, error) {
	id, err := d.getAccountRecord(accountByKeyIDTable, kid, "key-account index for key")
	if err != nil {
		return nil, err
	}
	return d.GetAccount(ctx, string(id))
}

// getAccountRecord reads key in one of step's account tables, with
// step's errors: acme.ErrNotFound if it is not there.
func (d *acmeDB) getAccountRecord(table []byte, key, what string) ([]byte, error) {
	v, err := d.raw.Get(table, []byte(key))
	switch {
	case database.IsErrNotFound(err):
		return nil, acme.ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("error loading %s %s: %w", what, key, err)
	}
	return v, nil
}
