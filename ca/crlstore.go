package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/custos-pki/custos/raftstore"
)

// How a CRL is stored. One up to crlInlineMax bytes sits in its head; a
// larger one is cut into chunks of crlChunkSize, written crlChunksPerTxn
// to a Raft entry (well under the store's 4 MiB command limit), under a
// generation named by the CRL number and a random tag. The head that names
// them is written last, by compare-and-swap; chunks of lower numbers are
// deleted after it. A million revocations make a CRL of about 45 MB: some
// sixty chunks.
const (
	crlInlineMax    = 256 << 10
	crlChunkSize    = 768 << 10
	crlChunksPerTxn = 4
)

// errCRLMoved says a CRL's chunks were replaced while they were read.
var errCRLMoved = errors.New("ca: the CRL was replaced while it was read")

func chunkPrefix(issuerID string) []byte { return []byte("chunk/" + issuerID + "/") }

func chunkKey(issuerID string, number uint64, gen string, i int) []byte {
	return fmt.Appendf(chunkPrefix(issuerID), "%016x/%s/%06d", number, gen, i)
}

// crlCache holds, per issuer, the DER of the chunked CRL this node last
// read or made, so that serving it again costs one read of its head.
type crlCache struct {
	mu sync.Mutex
	m  map[string]cachedCRL
}

type cachedCRL struct {
	gen string
	der []byte
}

// keepCRL remembers a CRL this node made.
func (c *CA) keepCRL(issuerID string, rec *storedCRL, der []byte) {
	if rec.Gen == "" {
		return
	}
	c.crls.mu.Lock()
	defer c.crls.mu.Unlock()
	if c.crls.m == nil {
		c.crls.m = make(map[string]cachedCRL)
	}
	c.crls.m[issuerID] = cachedCRL{gen: rec.Gen, der: der}
}

// writeChunks stores a large CRL's DER in chunks and notes them in rec; a
// small one goes into rec itself.
func (c *CA) writeChunks(ctx context.Context, issuerID string, rec *storedCRL, der []byte) error {
	if len(der) <= crlInlineMax {
		rec.DER = der
		return nil
	}
	tag := make([]byte, 8)
	if _, err := rand.Read(tag); err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	rec.Gen, rec.Size, rec.SHA256 = hex.EncodeToString(tag), len(der), sum[:]
	rec.Chunks = (len(der) + crlChunkSize - 1) / crlChunkSize
	var ops []raftstore.Op
	for i := range rec.Chunks {
		part := der[i*crlChunkSize : min(len(der), (i+1)*crlChunkSize)]
		ops = append(ops, raftstore.Op{Kind: raftstore.OpPut, Table: tableCRL, Key: chunkKey(issuerID, rec.Number, rec.Gen, i), Value: part})
		if len(ops) == crlChunksPerTxn || i == rec.Chunks-1 {
			if _, err := c.store.Txn(ctx, ops); err != nil {
				c.dropChunks(ctx, issuerID, rec)
				return fmt.Errorf("ca: store CRL chunks of %s: %w", issuerID, err)
			}
			ops = ops[:0]
		}
	}
	return nil
}

// crlDER returns the DER of a stored CRL. Chunks are read from this
// node's state, which holds them: they were written before the head that
// was just read linearizably. errCRLMoved means they were deleted in the
// meantime, after a newer CRL.
func (c *CA) crlDER(ctx context.Context, issuerID string, rec *storedCRL) ([]byte, error) {
	if rec.Gen == "" {
		return rec.DER, nil
	}
	c.crls.mu.Lock()
	hit, ok := c.crls.m[issuerID]
	c.crls.mu.Unlock()
	if ok && hit.gen == rec.Gen {
		return hit.der, nil
	}
	if rec.Chunks <= 0 || rec.Size <= 0 || rec.Chunks != (rec.Size+crlChunkSize-1)/crlChunkSize {
		return nil, fmt.Errorf("ca: stored CRL of %s: bad chunk count", issuerID)
	}
	der := make([]byte, 0, rec.Size)
	for i := range rec.Chunks {
		part, found, err := c.get(ctx, tableCRL, chunkKey(issuerID, rec.Number, rec.Gen, i), raftstore.Stale())
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, errCRLMoved
		}
		der = append(der, part...)
	}
	if sum := sha256.Sum256(der); len(der) != rec.Size || !bytes.Equal(sum[:], rec.SHA256) {
		return nil, errCRLMoved
	}
	c.keepCRL(issuerID, rec, der)
	return der, nil
}

// dropChunks deletes the chunks of a CRL that was not stored; what fails
// here pruneChunks removes later.
func (c *CA) dropChunks(ctx context.Context, issuerID string, rec *storedCRL) {
	if rec.Gen == "" {
		return
	}
	var ops []raftstore.Op
	for i := range rec.Chunks {
		ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableCRL, Key: chunkKey(issuerID, rec.Number, rec.Gen, i)})
	}
	if _, err := c.store.Txn(ctx, ops); err != nil {
		c.log.Warn("ca: CRL chunks not deleted; the next CRL will", "issuer", issuerID, "error", err)
	}
}

// pruneChunks deletes every chunk of an issuer numbered below number, the
// CRL just stored. A writer still making a CRL of a number at or above it
// keeps its chunks, and one below it cannot store its head any more.
func (c *CA) pruneChunks(ctx context.Context, issuerID string, number uint64) {
	prefix := chunkPrefix(issuerID)
	var ops []raftstore.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := c.store.Txn(ctx, ops)
		ops = ops[:0]
		return err
	}
	err := c.scanKeys(ctx, tableCRL, prefix, func(key []byte) error {
		n, err := strconv.ParseUint(string(key[len(prefix):min(len(key), len(prefix)+16)]), 16, 64)
		if err != nil || n >= number {
			return nil
		}
		ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableCRL, Key: key})
		if len(ops) == raftstore.MaxTxnOps {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		c.log.Warn("ca: old CRL chunks not deleted; the next CRL will", "issuer", issuerID, "error", err)
	}
}

// scanKeys calls fn for every key of table under prefix, read from this
// node's state.
func (c *CA) scanKeys(ctx context.Context, table string, prefix []byte, fn func([]byte) error) error {
	o := raftstore.ListOptions{Prefix: prefix, KeysOnly: true, Limit: raftstore.DefaultListLimit}
	for {
		page, err := c.store.List(ctx, table, o, raftstore.Stale())
		if err != nil {
			return err
		}
		for _, kv := range page.Items {
			if err := fn(kv.Key); err != nil {
				return err
			}
		}
		if page.Next == nil {
			return nil
		}
		o.After = page.Next
	}
}
