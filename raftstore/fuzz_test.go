package raftstore

import (
	"bufio"
	"bytes"
	"testing"
)

func FuzzDecodeCommand(f *testing.F) {
	seeds := []*command{
		{Type: cmdTxn, RequestID: []byte("0123456789abcdef"), Time: 1700000000, Ops: []Op{{Kind: OpPut, Table: "kv", Key: []byte("k"), Value: []byte("v")}}},
		{Type: cmdTxn, Ops: []Op{
			{Kind: OpCAS, Table: "kv", Key: []byte("k"), Old: []byte("tag"), Prefix: true, Value: []byte{}},
			{Kind: OpGet, Table: "t2", Key: []byte{0, 1}},
			{Kind: OpCAS, Table: "kv", Key: []byte("d"), Old: []byte("x"), Delete: true},
			{Kind: OpDelete, Table: "kv", Key: []byte("k")},
		}},
		{Type: cmdCreateTable, Ops: []Op{{Table: "kv"}}},
		{Type: cmdNoop, Time: -5},
		clusterIDCommand(),
	}
	for _, c := range seeds {
		f.Add(c.encode())
	}
	f.Add([]byte{})
	f.Add([]byte{commandVersion, byte(cmdTxn), 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCommand(data)
		if err != nil {
			return
		}
		// What decodes re-encodes to a form that decodes to the same
		// command (the input may use overlong varints; the output does not).
		enc := c.encode()
		c2, err := decodeCommand(enc)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if !bytes.Equal(c2.encode(), enc) {
			t.Fatalf("encoding is not stable:\n%x\n%x", enc, c2.encode())
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	f.Add(encodeResult(applyResult{Res: TxnResult{Succeeded: true, FailedOp: -1, Index: 42, Values: [][]byte{nil, []byte("v"), {}}}}))
	f.Add(encodeResult(applyResult{Err: ErrUnknownTable, Res: TxnResult{FailedOp: 2}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeResult(data)
		if err != nil {
			return
		}
		if _, err := decodeResult(encodeResult(r)); err != nil {
			t.Fatalf("re-encoded result does not decode: %v", err)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{3, 'W', 1, 2})
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = readFrame(bufioReader(data))
	})
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
