package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errorCodes gives each error that crosses the wire (forwarded requests,
// remembered results) a stable number. Append only.
var errorCodes = []error{
	nil,
	ErrNotFound,
	ErrUnknownTable,
	ErrInvalidTable,
	ErrInvalidKey,
	ErrValueTooLarge,
	ErrTooManyOps,
	ErrMalformed,
	ErrNotLeader,
	ErrNoLeader,
	ErrClosed,
	ErrTimeout,
	ErrUnknownOutcome,
	ErrPeerIdentity,
	ErrInvalidArgument,
	ErrNotPermitted,
	ErrMemberExists,
}

func errorCode(err error) byte {
	if err == nil {
		return 0
	}
	for i, e := range errorCodes[1:] {
		if errors.Is(err, e) {
			return byte(i + 1)
		}
	}
	return 255
}

func errorFromCode(code byte, msg string) error {
	if code == 0 {
		return nil
	}
	if int(code) < len(errorCodes) {
		if msg == "" || msg == errorCodes[code].Error() {
			return errorCodes[code]
		}
		return fmt.Errorf("%w (%s)", errorCodes[code], msg)
	}
	return errors.New("raftstore: remote: " + msg)
}

// applyResult is what the state machine returns for one command.
type applyResult struct {
	Res TxnResult
	Err error
}

// encodeResult is the wire form of r:
//
//	code(1) str(message) succeeded(1) varint(failedOp) uvarint(index)
//	uvarint(len(values)) { present(1) [bytes(value)] }...
func encodeResult(r applyResult) []byte {
	return appendResult(make([]byte, 0, maxResultSize(r)), r)
}

// maxResultSize bounds the length of r's wire form.
func maxResultSize(r applyResult) int {
	n := 1 + 2*binary.MaxVarintLen64 + 1 + 3*binary.MaxVarintLen64
	if r.Err != nil {
		n += len(r.Err.Error())
	}
	for _, v := range r.Res.Values {
		n += 1 + binary.MaxVarintLen64 + len(v)
	}
	return n
}

// appendResult appends the wire form of r to b.
func appendResult(b []byte, r applyResult) []byte {
	b = append(b, errorCode(r.Err))
	msg := ""
	if r.Err != nil {
		msg = r.Err.Error()
	}
	b = appendBytes(b, []byte(msg))
	ok := byte(0)
	if r.Res.Succeeded {
		ok = 1
	}
	b = append(b, ok)
	b = binary.AppendVarint(b, int64(r.Res.FailedOp))
	b = binary.AppendUvarint(b, r.Res.Index)
	b = binary.AppendUvarint(b, uint64(len(r.Res.Values)))
	for _, v := range r.Res.Values {
		if v == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = appendBytes(b, v)
	}
	return b
}

func decodeResult(b []byte) (applyResult, error) {
	d := &decoder{b: b}
	code := d.byte1("code")
	msg := d.bytes("message", 4096)
	ok := d.byte1("succeeded")
	failed := d.varint("failed op")
	index := d.uvarint("index")
	n := d.uvarint("value count")
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("value count")
	}
	var r applyResult
	if d.err != nil {
		return r, d.err
	}
	r.Res = TxnResult{Succeeded: ok == 1, FailedOp: int(failed), Index: index}
	if n > 0 {
		r.Res.Values = make([][]byte, n)
	}
	for i := range r.Res.Values {
		if d.byte1("value present") == 1 {
			r.Res.Values[i] = d.bytes("value", MaxValueSize)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return applyResult{}, d.err
	}
	r.Err = errorFromCode(code, string(msg))
	return r, nil
}
