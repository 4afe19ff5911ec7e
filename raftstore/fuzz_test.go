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
		{Type: cmdTxn, Ops: []Op{
			{Kind: OpCompare, Table: "auth.tokens", Key: []byte("h"), Old: []byte("mac"), Prefix: true},
			{Kind: OpCompare, Table: "auth.meta", Key: []byte("v")},
			{Kind: OpPut, Table: "kv", Key: []byte("k"), Value: []byte("v")},
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
	f.Add([]byte{4, 'W', 1, 1, 2})
	f.Add([]byte{5, 0, 0x80, 0x01, 'o', 'k'})
	f.Add([]byte{1, 'W'})
	f.Add([]byte{2, 'W', 0x80})
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := readFrame(bufioReader(data))
		if err != nil {
			return
		}
		// What reads writes back to a frame that reads the same.
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := writeFrame(w, fr); err != nil {
			t.Fatal(err)
		}
		_ = w.Flush()
		again, err := readFrame(bufioReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("a frame written back does not read: %v", err)
		}
		if again.kind != fr.kind || again.id != fr.id || !bytes.Equal(again.body, fr.body) {
			t.Fatalf("frame changed: %+v, then %+v", fr, again)
		}
	})
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
