package stepca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/custos-pki/custos/internal/decodecache"
	"github.com/custos-pki/custos/raftstore"
	"github.com/smallstep/certificates/acme"
	acmenosql "github.com/smallstep/certificates/acme/db/nosql"
	"github.com/smallstep/nosql/database"
)

// OrderIndexTable holds custos' index of each account's orders: one empty
// record per order, at "<account ID>/<order ID>". It replaces step's
// acme_account_orders_index, one JSON list per account that step rewrites
// with compare-and-swap at every new order after reading (and updating)
// every order in it, under one lock for all accounts: a new order cost
// O(pending orders of the account) reads, and concurrent orders of one
// account contended on one record.
const OrderIndexTable = "stepca.account_orders"

// acmeDB is step's ACME database with the nonces kept out of it (nonce.go)
// and with what lets the requests of one account run concurrently:
//   - a new order's challenges, authorizations, order and index entry are
//     written in ONE storage transaction, each insert-if-absent, at the end
//     of the new-order request (see writeBatch); the index entry is a
//     record of its own, so orders of one account never contend;
//   - an order leaves the index in the write that makes it valid or
//     invalid, and a finalisation writes the ACME certificate (a compact
//     record, see acmecert.go) and the valid order in one transaction;
//   - a challenge that validates is written with its authorization, made
//     valid (storeChallenge), and a pending order that becomes ready is
//     not written (UpdateOrder): polling writes nothing;
//   - the account's order list reads the index entries (and step's old
//     index record, which it only shrinks), and drops the entries of orders
//     found final or gone;
//   - an order or authorization only moves forward (pending, ready, valid;
//     or invalid): an update is a compare-and-swap on the record as read,
//     retried on conflict, and one computed from a stale read, which would
//     move it back, is not written (the caller gets the stored status).
type acmeDB struct {
	acme.DB
	nonces *nonces
	raw    *DB               // step's nosql database, under acme.DB
	certs  CertificateReader // the Recorder, if it reads certificates (acmecert.go)
	chains chainCache
	// accounts keeps decoded accounts by their stored bytes (account.go).
	accounts decodecache.Cache[stepAccount]
	parked   *parkedRecords // the inventory records of signed certificates (authdb.go), or nil
}

// batchKey carries a request's *writeBatch in its context.
type batchKey struct{}

// withBatch prepares ctx for a new-order or finalize request: the records
// it creates are written with the order (by CreateOrder, UpdateOrder).
func withBatch(ctx context.Context) context.Context {
	return context.WithValue(ctx, batchKey{}, &writeBatch{})
}

// batchFor returns the batch of ctx's request, or nil.
func batchFor(ctx context.Context) *writeBatch {
	b, _ := ctx.Value(batchKey{}).(*writeBatch)
	return b
}

// CreateChallenge makes a challenge; in a new-order request it is written
// with the order.
func (d *acmeDB) CreateChallenge(ctx context.Context, ch *acme.Challenge) error {
	if b := batchFor(ctx); b != nil {
		return b.db(d.raw).CreateChallenge(ctx, ch)
	}
	return d.DB.CreateChallenge(ctx, ch)
}

// CreateAuthorization makes an authorization; in a new-order request it is
// written with the order.
func (d *acmeDB) CreateAuthorization(ctx context.Context, az *acme.Authorization) error {
	if b := batchFor(ctx); b != nil {
		return b.db(d.raw).CreateAuthorization(ctx, az)
	}
	return d.DB.CreateAuthorization(ctx, az)
}

// CreateOrder writes the order, its index entry and whatever the request
// created before it, in one transaction.
func (d *acmeDB) CreateOrder(ctx context.Context, o *acme.Order) error {
	b := batchFor(ctx)
	if b == nil {
		b = &writeBatch{}
	}
	if err := b.db(d.raw).CreateOrder(ctx, o); err != nil {
		return err
	}
	return d.flush(ctx, b)
}

// GetOrdersByAccountID lists the account's pending orders.
func (d *acmeDB) GetOrdersByAccountID(ctx context.Context, accID string) ([]string, error) {
	legacy, err := d.DB.GetOrdersByAccountID(ctx, accID)
	if err != nil {
		return nil, err
	}
	return d.ordersOf(ctx, accID, legacy)
}

// ordersOf appends to ids the account's indexed orders that are pending
// after their status is brought up to date, as step lists them, and drops
// the index entries of orders that are gone or final.
func (d *acmeDB) ordersOf(ctx context.Context, accID string, ids []string) ([]string, error) {
	var drop []raftstore.Op
	prefix := []byte(accID + "/")
	ids = append([]string{}, ids...)
	err := listPrefix(ctx, d.raw, OrderIndexTable, prefix, func(key []byte) error {
		id := string(key[len(prefix):])
		o, err := d.DB.GetOrder(ctx, id)
		if err != nil {
			if _, gerr := d.raw.Get([]byte(bucketOrders), []byte(id)); !errors.Is(gerr, database.ErrNotFound) {
				return err
			}
			drop = append(drop, raftstore.Op{Kind: raftstore.OpDelete, Table: OrderIndexTable, Key: key})
			return nil
		}
		if err := o.UpdateStatus(ctx, d); err != nil {
			return err
		}
		switch o.Status {
		case acme.StatusPending:
			ids = append(ids, id)
		case acme.StatusValid, acme.StatusInvalid:
			drop = append(drop, raftstore.Op{Kind: raftstore.OpDelete, Table: OrderIndexTable, Key: key})
		}
		return nil
	})
	if err != nil {
		return nil, acme.WrapErrorISE(err, "error loading orders of account %s", accID)
	}
	if len(drop) > 0 {
		ctx, cancel := context.WithTimeout(ctx, d.raw.timeout)
		defer cancel()
		if _, err := d.raw.store.Txn(ctx, drop); err != nil {
			return nil, acme.WrapErrorISE(err, "error pruning the order index of account %s", accID)
		}
	}
	return ids, nil
}

// listPrefix calls fn with every key of table under prefix.
func listPrefix(ctx context.Context, d *DB, table string, prefix []byte, fn func(key []byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var after []byte
	for {
		page, err := d.store.List(ctx, table, raftstore.ListOptions{Prefix: prefix, After: after, KeysOnly: true})
		if err != nil {
			return fmt.Errorf("stepca: list %s: %w", table, err)
		}
		for _, kv := range page.Items {
			if err := fn(kv.Key); err != nil {
				return err
			}
		}
		if page.Next == nil {
			return nil
		}
		after = page.Next
	}
}

// orderRank orders the statuses an order goes through; invalid is final.
var orderRank = map[acme.Status]int{acme.StatusPending: 0, acme.StatusReady: 1, "processing": 2, acme.StatusValid: 3}

// UpdateOrder stores o's status, error and certificate, unless the stored
// order is already further on (then o gets the stored ones), together with
// what the request created (the certificate of a finalisation, and its
// inventory record: if this write fails, the record is written alone, so
// that a certificate signed is recorded though not handed out). A pending
// order that becomes ready is not written: ready is what a pending order
// whose authorizations are all valid is, and step works it out again at
// every read of the order (Order.UpdateStatus), as Boulder derives an
// order's status from its authorizations. Valid authorizations stay valid
// and expire with their order, so the order reads ready until it is
// finalised or expires, as a stored ready order would; polling an order
// and finalising it cost no write for the move.
func (d *acmeDB) UpdateOrder(ctx context.Context, o *acme.Order) error {
	var with []raftstore.Op
	var recs []PreparedRecord
	if b := batchFor(ctx); b != nil {
		with, recs = b.take(), b.takeRecords()
	}
	err := d.advance(ctx, with, bucketOrders, "order", o.ID, func(rec record) ([]raftstore.Op, bool, error) {
		cur := rec.status()
		if cur == acme.StatusPending && o.Status == acme.StatusReady {
			return nil, false, nil
		}
		if (final(cur) && o.Status != cur) || (orderRank[o.Status] < orderRank[cur] && o.Status != acme.StatusInvalid) {
			o.Status, o.CertificateID, o.Error = cur, rec.str("certificate"), nil
			return nil, false, rec.decode("error", &o.Error)
		}
		rec.set("status", o.Status, false)
		rec.set("error", o.Error, true)
		rec.set("certificate", o.CertificateID, true)
		if !final(o.Status) {
			return nil, true, nil
		}
		// A final order leaves the account's index (step lists pending
		// orders only).
		return []raftstore.Op{{Kind: raftstore.OpDelete, Table: OrderIndexTable, Key: []byte(rec.str("accountID") + "/" + o.ID)}}, true, nil
	})
	if err != nil && len(recs) > 0 {
		d.parked.writeAlone(recs)
	}
	return err
}

// storeChallenge stores ch (for UpdateChallenge). A challenge that becomes
// valid is written in one transaction with its authorization, made valid
// as step's Authorization.UpdateStatus would make it at its next read: if
// it is pending, not expired by step's clock and holds ch (a challenge URL
// may name another authorization than the challenge's, and step reads the
// challenge by its ID alone). The authorization then keeps only ch (see
// UpdateAuthorization). Step's own code makes the challenge's write (into
// a writeBatch), so the record is the one step would store. A challenge
// that is not valid (an error stored, or invalid, for which step leaves
// the authorization pending) is written alone, as step does.
func (d *acmeDB) storeChallenge(ctx context.Context, ch *acme.Challenge) error {
	if ch.Status != acme.StatusValid || ch.AuthorizationID == "" {
		return d.DB.UpdateChallenge(ctx, ch)
	}
	b := &writeBatch{}
	if err := b.db(d.raw).UpdateChallenge(ctx, ch); err != nil {
		return err
	}
	now := new(acme.Clock).Now()
	return d.update(ctx, b.take(), bucketAuthzs, "authz", ch.AuthorizationID, true, func(rec record) ([]raftstore.Op, bool, error) {
		var ids []string
		var expires time.Time
		if rec == nil || rec.status() != acme.StatusPending ||
			rec.decode("expiresAt", &expires) != nil || now.After(expires) ||
			rec.decode("challengeIDs", &ids) != nil || !slices.Contains(ids, ch.ID) {
			return nil, false, nil
		}
		rec.set("status", acme.StatusValid, false)
		rec.set("error", (*acme.Error)(nil), false)
		return pruneChallenges(rec, &acme.Authorization{Challenges: []*acme.Challenge{ch}}), true, nil
	})
}

// UpdateAuthorization stores az's status, fingerprint and error, unless
// the stored authorization is final already (then az gets its status).
// An authorization that becomes valid keeps only its valid challenges,
// and the others are deleted in the same write: RFC 8555, 7.1.4, lists
// for a valid authorization "the challenge that was validated", and the
// others (step makes three per name) would be kept for nothing.
func (d *acmeDB) UpdateAuthorization(ctx context.Context, az *acme.Authorization) error {
	return d.advance(ctx, nil, bucketAuthzs, "authz", az.ID, func(rec record) ([]raftstore.Op, bool, error) {
		cur := rec.status()
		if cur != acme.StatusPending && az.Status != cur {
			az.Status, az.Fingerprint, az.Error = cur, rec.str("fingerprint"), nil
			return nil, false, rec.decode("error", &az.Error)
		}
		rec.set("status", az.Status, false)
		rec.set("fingerprint", az.Fingerprint, true)
		rec.set("error", az.Error, false)
		if cur != acme.StatusPending || az.Status != acme.StatusValid {
			return nil, true, nil
		}
		return pruneChallenges(rec, az), true, nil
	})
}

// pruneChallenges keeps in rec the challenges of az that are valid, and
// returns the deletes of the others; none if az has no valid challenge
// among those rec holds.
func pruneChallenges(rec record, az *acme.Authorization) []raftstore.Op {
	var ids []string
	if rec.decode("challengeIDs", &ids) != nil {
		return nil
	}
	valid := map[string]bool{}
	for _, ch := range az.Challenges {
		if ch != nil && ch.Status == acme.StatusValid {
			valid[ch.ID] = true
		}
	}
	var keep []string
	var drop []raftstore.Op
	for _, id := range ids {
		if valid[id] {
			keep = append(keep, id)
		} else {
			drop = append(drop, raftstore.Op{Kind: raftstore.OpDelete, Table: TablePrefix + bucketChallenges, Key: []byte(id)})
		}
	}
	if len(keep) == 0 {
		return nil
	}
	rec.set("challengeIDs", keep, false)
	return drop
}

func final(s acme.Status) bool { return s == acme.StatusValid || s == acme.StatusInvalid }

// advance applies change to the record at bucket/id with compare-and-swap
// on the bytes read, in one transaction with the inserts in with, reading
// again when another write came first. change reports whether to write
// (the inserts are written either way), and what else to write with it.
// Step's records are JSON objects; the fields change does not touch are
// kept as they are.
func (d *acmeDB) advance(ctx context.Context, with []raftstore.Op, bucket, typ, id string, change func(record) ([]raftstore.Op, bool, error)) error {
	return d.update(ctx, with, bucket, typ, id, false, change)
}

// update is advance; with missingOK, a record that does not exist is
// given to change as nil (and cannot be written) instead of failing.
func (d *acmeDB) update(ctx context.Context, with []raftstore.Op, bucket, typ, id string, missingOK bool, change func(record) ([]raftstore.Op, bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d.raw.timeout)
	defer cancel()
	table := TablePrefix + bucket
	for range maxUpdateAttempts {
		old, err := d.raw.store.Get(ctx, table, []byte(id))
		var rec record
		switch {
		case errors.Is(err, raftstore.ErrNotFound) && missingOK:
		case errors.Is(err, raftstore.ErrNotFound):
			return acme.NewError(acme.ErrorMalformedType, "%s %s not found", typ, id)
		case err != nil:
			return acme.WrapErrorISE(err, "error loading %s %s", typ, id)
		default:
			if err := json.Unmarshal(old, &rec); err != nil {
				return acme.WrapErrorISE(err, "error unmarshaling %s %s", typ, id)
			}
		}
		more, write, err := change(rec)
		if err != nil {
			return err
		}
		ops := with
		if write && rec != nil {
			nu, err := json.Marshal(rec)
			if err != nil {
				return acme.WrapErrorISE(err, "error marshaling %s %s", typ, id)
			}
			ops = append(ops[:len(ops):len(ops)], raftstore.Op{Kind: raftstore.OpCAS, Table: table, Key: []byte(id), Old: old, Value: nu})
			ops = append(ops, more...)
		}
		if len(ops) == 0 {
			return nil
		}
		res, err := d.raw.store.Txn(ctx, ops)
		if err != nil {
			return acme.WrapErrorISE(err, "error saving %s %s", typ, id)
		}
		if res.Succeeded {
			return nil
		}
		if f := ops[res.FailedOp]; res.FailedOp < len(with) && f.Old == nil { // an insert, not the compare-and-swap
			return acme.NewErrorISE("error saving %s %s: %s/%s exists", typ, id, f.Table, f.Key)
		} else if res.FailedOp < len(with) { // a record written with it changed since it was read
			return acme.NewErrorISE("error saving %s %s: %s/%s changed since last read", typ, id, f.Table, f.Key)
		}
	}
	return acme.NewErrorISE("error saving %s %s: it kept changing", typ, id)
}

// record is one of step's JSON records, field by field.
type record map[string]json.RawMessage

func (r record) status() acme.Status {
	return acme.Status(r.str("status"))
}

func (r record) str(field string) string {
	var s string
	_ = json.Unmarshal(r[field], &s)
	return s
}

func (r record) decode(field string, v any) error {
	if raw, ok := r[field]; ok {
		return json.Unmarshal(raw, v)
	}
	return nil
}

// set stores v at field; omitEmpty drops the field when v is empty, as
// step's omitempty tags do.
func (r record) set(field string, v any, omitEmpty bool) {
	b, err := json.Marshal(v)
	if err != nil { // strings, statuses and *acme.Error always marshal
		b = []byte("null")
	}
	if omitEmpty && (string(b) == "null" || string(b) == `""`) {
		delete(r, field)
		return
	}
	r[field] = b
}

// writeBatch collects the records a new-order or finalize request creates
// (or a challenge update, see UpdateChallenge), to write them in one
// storage transaction. Step's nosql ACME code runs over it (batchDB)
// unchanged: its inserts are compare-and-swaps from nothing, and its
// updates compare-and-swaps from the value it read, which the batch takes
// as granted and the transaction checks.
type writeBatch struct {
	mu   sync.Mutex
	ops  []raftstore.Op
	recs []PreparedRecord // inventory records whose writes are among ops
	adb  *acmenosql.DB
}

// db returns step's ACME database writing into b.
func (b *writeBatch) db(raw *DB) *acmenosql.DB {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.adb == nil {
		b.adb, _ = acmenosql.New(&batchDB{DB: raw, b: b}) // batchDB.CreateTable does nothing
	}
	return b.adb
}

// take returns the operations collected so far and empties the batch.
func (b *writeBatch) take() []raftstore.Op {
	b.mu.Lock()
	defer b.mu.Unlock()
	ops := b.ops
	b.ops = nil
	return ops
}

// takeRecords returns the inventory records among the operations taken,
// and forgets them: whoever writes those operations writes these alone if
// that fails.
func (b *writeBatch) takeRecords() []PreparedRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	recs := b.recs
	b.recs = nil
	return recs
}

func (b *writeBatch) add(ops ...raftstore.Op) {
	b.mu.Lock()
	b.ops = append(b.ops, ops...)
	b.mu.Unlock()
}

// addRecord adds an inventory record's writes.
func (b *writeBatch) addRecord(p PreparedRecord) {
	b.mu.Lock()
	b.ops = append(b.ops, p.Writes()...)
	b.recs = append(b.recs, p)
	b.mu.Unlock()
}

// flush writes b; an insert whose key exists fails it whole, and then the
// inventory records it held are written alone.
func (d *acmeDB) flush(ctx context.Context, b *writeBatch) error {
	ops, recs := b.take(), b.takeRecords()
	if len(ops) == 0 {
		return nil
	}
	err := writeOps(ctx, d.raw, ops)
	if err != nil && len(recs) > 0 {
		d.parked.writeAlone(recs)
	}
	return err
}

// writeOps writes ops in one transaction.
func writeOps(ctx context.Context, raw *DB, ops []raftstore.Op) error {
	ctx, cancel := context.WithTimeout(ctx, raw.timeout)
	defer cancel()
	res, err := raw.store.Txn(ctx, ops)
	if err != nil {
		return acme.WrapErrorISE(err, "error saving order")
	}
	if !res.Succeeded {
		return acme.NewErrorISE("error saving order: %s/%s exists", ops[res.FailedOp].Table, ops[res.FailedOp].Key)
	}
	return nil
}

// batchDB is what step's nosql ACME code sees during a new-order request
// (and a challenge update): reads go to storage, inserts and
// compare-and-swaps go to the batch, and the order index of step
// (acme_account_orders_index) reads as empty and takes the new order as an
// entry of OrderIndexTable. Anything else is refused.
type batchDB struct {
	*DB
	b *writeBatch
}

var errBatchOp = errors.New("stepca: operation not supported while creating an order")

func (d *batchDB) CreateTable([]byte) error { return nil }

func (d *batchDB) Get(bucket, key []byte) ([]byte, error) {
	if string(bucket) == bucketOrderIndex {
		return nil, notFound(TablePrefix+bucketOrderIndex, key, nil)
	}
	return d.DB.Get(bucket, key)
}

func (d *batchDB) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	if newValue == nil || (oldValue != nil && string(bucket) == bucketOrderIndex) {
		return nil, false, errBatchOp
	}
	if string(bucket) == bucketOrderIndex {
		var ids []string
		if err := json.Unmarshal(newValue, &ids); err != nil {
			return nil, false, fmt.Errorf("stepca: order index of %s: %w", key, err)
		}
		for _, id := range ids {
			if strings.Contains(id, "/") || strings.Contains(string(key), "/") {
				return nil, false, fmt.Errorf("stepca: order index: bad ID %q/%q", key, id)
			}
			d.b.add(raftstore.Op{Kind: raftstore.OpCAS, Table: OrderIndexTable, Key: []byte(string(key) + "/" + id), Value: []byte{}})
		}
		return newValue, true, nil
	}
	t, err := TableName(bucket)
	if err != nil {
		return nil, false, err
	}
	d.b.add(raftstore.Op{Kind: raftstore.OpCAS, Table: t, Key: key, Old: oldValue, Value: newValue})
	return newValue, true, nil
}

func (d *batchDB) Set([]byte, []byte, []byte) error { return errBatchOp }
func (d *batchDB) Del([]byte, []byte) error         { return errBatchOp }
func (d *batchDB) Update(*database.Tx) error        { return errBatchOp }
