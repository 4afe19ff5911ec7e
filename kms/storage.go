package kms

import (
	"context"
	"strings"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// Storage is what the barrier wraps: the operations of *raftstore.Store.
// The Barrier implements it too, over plaintext, so that the layers above
// use the barrier exactly as they would the store.
type Storage interface {
	CreateTable(ctx context.Context, name string) error
	Get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) ([]byte, error)
	Put(ctx context.Context, table string, key, value []byte) error
	Delete(ctx context.Context, table string, key []byte) error
	CompareAndSwap(ctx context.Context, table string, key, old, new []byte) (swapped bool, current []byte, err error)
	Txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error)
	List(ctx context.Context, table string, o raftstore.ListOptions, opts ...raftstore.ReadOption) (raftstore.ListPage, error)
}

var (
	_ Storage = (*raftstore.Store)(nil)
	_ Storage = (*Barrier)(nil)
)

// Clock tells the time. Rotation ages, deletion windows and timestamps are
// decided with it, so tests can move it.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
func SystemClock() Clock { return systemClock{} }

// Tables the KMS keeps in storage. Names starting with ReservedPrefix are
// refused by the Barrier's public methods.
const (
	ReservedPrefix = "kms."
	tableCore      = "kms.core"   // seal config, keyring: not through the barrier
	tableKeys      = "kms.keys"   // named key metadata, through the barrier
	tableKeyMat    = "kms.keymat" // named key material, through the barrier
)

// Records in tableCore.
var (
	recSeal        = []byte("seal")
	recKeyring     = []byte("keyring")
	recRootUpgrade = []byte("root-upgrade")
	recUsage       = []byte("keyring-usage")
	recRotation    = []byte("keyring-rotation")
)

func reserved(table string) bool { return strings.HasPrefix(table, ReservedPrefix) }
