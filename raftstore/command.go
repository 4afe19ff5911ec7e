package raftstore

import (
	"encoding/binary"
	"fmt"

	"github.com/custos-pki/custos/internal/names"
)

// command is the replicated envelope. Every log entry of type LogCommand is
// one encoded command. The encoding is versioned and self-delimiting:
//
//	version(1) type(1) uvarint(len(requestID)) requestID varint(unixNano)
//	uvarint(len(ops)) ops...
//
// and each op is
//
//	kind(1) flags(1) str(table) bytes(key) [bytes(value)] [bytes(old)]
//
// where str and bytes are uvarint-length-prefixed.
type command struct {
	Type      cmdType
	RequestID []byte
	// Time is stamped by the proposer (unix nanoseconds): the only clock the
	// state machine may use.
	Time int64
	Ops  []Op

	// names are table names decode made, for later operations and
	// commands decoded into the same command to share (not encoded).
	names []string
}

type cmdType uint8

const (
	cmdTxn         cmdType = 1
	cmdCreateTable cmdType = 2
	// cmdNoop changes nothing; a new leader applies one to mark its term.
	cmdNoop cmdType = 3
	// cmdClusterID records the cluster's ID (Ops[0].Value) unless the state
	// already names one. The first leader applies it in place of its no-op.
	cmdClusterID cmdType = 4
)

const maxClusterID = 64

const commandVersion = 1

const (
	flagValue  = 1 << 0
	flagOld    = 1 << 1
	flagPrefix = 1 << 2
	flagDelete = 1 << 3
)

const maxRequestID = 64

// validTable reports whether name may name a user table: 1 to
// MaxTableName characters of [a-z0-9_.-], the first a letter or digit.
func validTable(name string) bool { return names.Valid(name, MaxTableName) }

// validate checks a command against the store's limits. It runs before a
// command is proposed and again when a forwarded command is received.
func (c *command) validate() error {
	if len(c.RequestID) > maxRequestID {
		return fmt.Errorf("%w: request ID longer than %d bytes", ErrInvalidArgument, maxRequestID)
	}
	switch c.Type {
	case cmdCreateTable:
		if len(c.Ops) != 1 || !validTable(c.Ops[0].Table) {
			return ErrInvalidTable
		}
		return nil
	case cmdNoop:
		if len(c.Ops) != 0 {
			return fmt.Errorf("%w: no-op with operations", ErrMalformed)
		}
		return nil
	case cmdClusterID:
		if len(c.Ops) != 1 || len(c.Ops[0].Value) == 0 || len(c.Ops[0].Value) > maxClusterID {
			return fmt.Errorf("%w: cluster ID must be 1 to %d bytes", ErrMalformed, maxClusterID)
		}
		return nil
	case cmdTxn:
	default:
		return fmt.Errorf("%w: unknown command type %d", ErrMalformed, c.Type)
	}
	if len(c.Ops) == 0 {
		return fmt.Errorf("%w: empty transaction", ErrInvalidArgument)
	}
	if len(c.Ops) > MaxTxnOps {
		return ErrTooManyOps
	}
	total := 0
	for i := range c.Ops {
		op := &c.Ops[i]
		if !validTable(op.Table) {
			return fmt.Errorf("%w: %q", ErrInvalidTable, op.Table)
		}
		if len(op.Key) == 0 || len(op.Key) > MaxKeySize {
			return fmt.Errorf("%w: key must be 1 to %d bytes", ErrInvalidKey, MaxKeySize)
		}
		if len(op.Value) > MaxValueSize || len(op.Old) > MaxValueSize {
			return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooLarge, max(len(op.Value), len(op.Old)), MaxValueSize)
		}
		total += len(op.Value)
		switch op.Kind {
		case OpGet, OpPut, OpDelete, OpCAS, OpCompare:
		default:
			return fmt.Errorf("%w: unknown operation %d", ErrMalformed, op.Kind)
		}
		if (op.Kind == OpPut || (op.Kind == OpCAS && !op.Delete)) && op.Value == nil {
			return fmt.Errorf("%w: %s without a value", ErrMalformed, op.Kind)
		}
		if (op.Kind == OpCAS || op.Kind == OpCompare) && op.Prefix && op.Old == nil {
			return fmt.Errorf("%w: prefix compare needs an expected prefix", ErrInvalidArgument)
		}
		if op.Kind == OpCompare && (op.Value != nil || op.Delete) {
			return fmt.Errorf("%w: compare with a value or delete: it writes nothing", ErrInvalidArgument)
		}
	}
	if total > 4*MaxValueSize {
		return fmt.Errorf("%w: transaction carries %d bytes", ErrValueTooLarge, total)
	}
	return nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// encode returns the wire form of c.
func (c *command) encode() []byte {
	n := 16 + len(c.RequestID)
	for _, op := range c.Ops {
		n += 16 + len(op.Table) + len(op.Key) + len(op.Value) + len(op.Old)
	}
	b := make([]byte, 0, n)
	b = append(b, commandVersion, byte(c.Type))
	b = appendBytes(b, c.RequestID)
	b = binary.AppendVarint(b, c.Time)
	b = binary.AppendUvarint(b, uint64(len(c.Ops)))
	for _, op := range c.Ops {
		var flags byte
		if op.Value != nil {
			flags |= flagValue
		}
		if op.Old != nil {
			flags |= flagOld
		}
		if op.Prefix {
			flags |= flagPrefix
		}
		if op.Delete {
			flags |= flagDelete
		}
		b = append(b, byte(op.Kind), flags)
		b = appendBytes(b, []byte(op.Table))
		b = appendBytes(b, op.Key)
		if op.Value != nil {
			b = appendBytes(b, op.Value)
		}
		if op.Old != nil {
			b = appendBytes(b, op.Old)
		}
	}
	return b
}

// decoder reads the wire form; it never panics and never allocates more than
// the input can hold.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes returns a copy of the next length-prefixed field (never nil on
// success, so that an empty value stays distinct from an absent one).
func (d *decoder) bytes(what string, limit int) []byte {
	v := d.view(what, limit)
	if v == nil {
		return nil
	}
	return append(make([]byte, 0, len(v)), v...)
}

// view is bytes without the copy: the field as a slice of the input, with
// its capacity cut to its length so that an append cannot reach the next.
func (d *decoder) view(what string, limit int) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	if n == 0 {
		return []byte{}
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// decodeCommand parses and validates the wire form of a command. The
// command's byte fields are slices of b: b must not change while the
// command is in use.
func decodeCommand(b []byte) (*command, error) {
	c := new(command)
	if err := c.decode(b); err != nil {
		return nil, err
	}
	return c, nil
}

// decode is decodeCommand into c, reusing the capacity of c.Ops; the
// state machine decodes every command of a batch into one command.
func (c *command) decode(b []byte) error {
	d := decoder{b: b}
	if v := d.byte1("version"); d.err == nil && v != commandVersion {
		return fmt.Errorf("%w: unsupported version %d", ErrMalformed, v)
	}
	c.Type = cmdType(d.byte1("type"))
	c.RequestID = d.view("request id", maxRequestID)
	c.Time = d.varint("time")
	nops := d.uvarint("op count")
	if d.err == nil && (nops > MaxTxnOps || nops > uint64(len(d.b))/4) {
		d.fail("op count")
	}
	if d.err != nil {
		return d.err
	}
	if uint64(cap(c.Ops)) >= nops {
		c.Ops = c.Ops[:nops]
		clear(c.Ops)
	} else {
		c.Ops = make([]Op, nops)
	}
	for i := range c.Ops {
		op := &c.Ops[i]
		op.Kind = OpKind(d.byte1("op kind"))
		flags := d.byte1("op flags")
		if flags&^(flagValue|flagOld|flagPrefix|flagDelete) != 0 {
			d.fail("op flags")
		}
		op.Table = c.table(&d)
		op.Key = d.view("key", MaxKeySize)
		if flags&flagValue != 0 {
			op.Value = d.view("value", MaxValueSize)
		}
		if flags&flagOld != 0 {
			op.Old = d.view("old value", MaxValueSize)
		}
		op.Prefix = flags&flagPrefix != 0
		op.Delete = flags&flagDelete != 0
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return d.err
	}
	return c.validate()
}

// maxNames bounds the table names a command keeps for sharing.
const maxNames = 8

// table reads a table name, sharing the string of an earlier one: the
// operations of a transaction, and the commands of a batch, mostly name a
// few tables.
func (c *command) table(d *decoder) string {
	b := d.view("table", MaxTableName)
	for _, name := range c.names {
		if name == string(b) {
			return name
		}
	}
	name := string(b)
	if len(c.names) < maxNames {
		c.names = append(c.names, name)
	}
	return name
}
