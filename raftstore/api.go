package raftstore

import (
	"errors"
)

// Errors returned by the store. They are stable: callers map them to API codes.
var (
	ErrNotFound        = errors.New("raftstore: not found")
	ErrUnknownTable    = errors.New("raftstore: unknown table")
	ErrInvalidTable    = errors.New("raftstore: invalid table name")
	ErrInvalidKey      = errors.New("raftstore: invalid key")
	ErrValueTooLarge   = errors.New("raftstore: value too large")
	ErrTooManyOps      = errors.New("raftstore: too many operations in one transaction")
	ErrMalformed       = errors.New("raftstore: malformed command")
	ErrNotLeader       = errors.New("raftstore: not leader")
	ErrNoLeader        = errors.New("raftstore: no leader")
	ErrClosed          = errors.New("raftstore: closed")
	ErrTimeout         = errors.New("raftstore: timed out")
	ErrUnknownOutcome  = errors.New("raftstore: outcome unknown: the request may or may not have been applied")
	ErrPeerIdentity    = errors.New("raftstore: peer certificate does not match its server ID")
	ErrInvalidArgument = errors.New("raftstore: invalid argument")
	// ErrNotPermitted refuses a request a peer may not make: a non-voter
	// writing, or a promotion whose proof the leader does not accept.
	ErrNotPermitted = errors.New("raftstore: not permitted for this peer")
	// ErrMemberExists refuses to add a server whose ID is already in the
	// configuration under another address or suffrage: remove it first.
	ErrMemberExists = errors.New("raftstore: a server with this ID is already a member")
)

// Limits enforced before anything reaches Raft.
const (
	MaxValueSize = 1 << 20 // 1 MiB
	MaxKeySize   = 4096
	MaxTxnOps    = 1024
	MaxTableName = 64
)

// OpKind is the kind of one operation in a transaction.
type OpKind uint8

// Operation kinds.
const (
	// OpGet reads a key; if the key is absent the transaction aborts
	// (get-or-abort) and nothing is written.
	OpGet OpKind = iota + 1
	// OpPut writes Value at Key.
	OpPut
	// OpDelete removes Key; deleting an absent key is not an error.
	OpDelete
	// OpCAS compares the current value at Key with Old and, if equal, writes
	// Value (or deletes Key when Delete is set). Old == nil means "only if
	// absent". When Prefix is set, Old is compared with the first len(Old)
	// bytes of the current value (which must exist). A failed compare aborts
	// the transaction.
	OpCAS
	// OpCompare is OpCAS without the swap: it compares the current value
	// at Key with Old (nil: only if absent; with Prefix, a prefix of a
	// value that must exist), writes nothing, and aborts the transaction
	// on a mismatch, reporting the current value as a failed OpCAS does.
	// A caller that makes a write depend on records it read elsewhere (a
	// guard) puts its compares first: FailedOp below their count then
	// tells the guard's failure from that of the caller's own conditions.
	OpCompare
)

func (k OpKind) String() string {
	switch k {
	case OpGet:
		return "get"
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	case OpCompare:
		return "compare"
	}
	return "unknown"
}

// Op is one operation of an atomic transaction.
type Op struct {
	Kind   OpKind
	Table  string
	Key    []byte
	Value  []byte // OpPut, OpCAS
	Old    []byte // OpCAS, OpCompare: expected value; nil means absent
	Prefix bool   // OpCAS, OpCompare: compare Old with a prefix of the current value
	Delete bool   // OpCAS: delete instead of writing Value
}

// TxnResult is the outcome of a transaction. A failed condition is reported
// here (Succeeded false), not as an error.
type TxnResult struct {
	Succeeded bool
	// FailedOp is the index of the operation whose condition failed, or -1.
	FailedOp int
	// Values holds, per operation: the value read by OpGet; for the failed
	// OpCAS or OpCompare, the current value (nil if absent). Other entries
	// are nil.
	Values [][]byte
	// Index is the Raft log index at which the transaction was applied.
	Index uint64
}

// KV is one key and its value.
type KV struct {
	Key   []byte
	Value []byte
}

// ListOptions selects a page of a table.
type ListOptions struct {
	Prefix []byte
	// After starts the page after this key (exclusive); nil starts at Prefix.
	After []byte
	// Limit caps the number of entries; 0 means DefaultListLimit.
	Limit int
	// KeysOnly omits values.
	KeysOnly bool
}

// DefaultListLimit is the page size when ListOptions.Limit is 0.
const DefaultListLimit = 1000

// ListPage is one page of a List. Next is the key to pass as After for the
// next page, or nil when the listing is complete.
type ListPage struct {
	Items []KV
	Next  []byte
}

// ReadOption changes how a read is served.
type ReadOption func(*readOptions)

type readOptions struct{ stale bool }

// Stale serves a read from this node's state without checking that it is
// current: faster, may be behind the leader, and served without a quorum.
func Stale() ReadOption { return func(o *readOptions) { o.stale = true } }
