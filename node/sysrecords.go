package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// The sys table holds the node's own records: the few things the cluster
// agrees on that belong to no service. This file is the table's only reader
// and writer. Every record is declared in sysRecords with the one feature
// that owns it and what it holds, and is reached only through that owner's
// functions below; a key outside the declared set is refused before it
// reaches the store (TestSysKeysDeclared), and no other file names the table
// (TestSysTableOnlyHere).
//
// The keys are those the first version wrote: a cluster made by an earlier
// version reads its records unchanged. Adding a record means adding a line
// to sysRecords and its owner's functions here.
const tableSys = "sys"

// Keys and key prefixes of the sys table.
const (
	recClusterCA    = "cluster-ca-cert"
	recAuditKey     = "audit-hmac-key"
	recStepPassword = "step-jwk-password"
	joinPrefix      = "join/"
	joinChallenge   = "join-challenge/"
	apiURLPrefix    = "api-url/"
)

// sysRecord declares one record, or one family of records under a prefix.
type sysRecord struct {
	key     string
	suffix  *regexp.Regexp // nil: key is exact; else key is a prefix and this matches the rest
	owner   string
	purpose string
}

var sha256HexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// sysRecords is every record the sys table may hold.
var sysRecords = []sysRecord{
	{recClusterCA, nil, "cluster CA: written at init (lifecycle.go), read to sign joining nodes (join.go) and as step's federated root (stephosts.go)",
		"PEM certificate of the cluster CA; its key is the kms key " + clusterCAKey},
	{recAuditKey, nil, "audit (lifecycle.go)", "HMAC key of the audit log, made once"},
	{recStepPassword, nil, "ACME (acme.go)", "password of step-ca's JWK provisioner, hex, made once"},
	{joinPrefix, sha256HexRE, "join (join.go)",
		"one-time join token, keyed by the hex SHA-256 of the token: a JSON joinRecord, deleted when spent"},
	{joinChallenge, nodeIDRE, "join (join.go)",
		"the challenge a joined node reads through the barrier and sends back to become a voter, keyed by node ID; deleted once answered"},
	{apiURLPrefix, nodeIDRE, "leader proxy (proxy.go); step's token audiences (stephosts.go, read)",
		"API URL of each node, keyed by node ID"},
}

// sysKey returns key if the sys table declares it.
func sysKey(key string) ([]byte, error) {
	for _, r := range sysRecords {
		if r.suffix == nil && key == r.key {
			return []byte(key), nil
		}
		if rest, ok := strings.CutPrefix(key, r.key); ok && r.suffix != nil && r.suffix.MatchString(rest) {
			return []byte(key), nil
		}
	}
	return nil, fmt.Errorf("node: sys table: key %q is not declared in sysRecords", key)
}

// sysTable reads and writes declared keys of the sys table through the
// barrier. Only the owner functions below use it.
type sysTable struct{ b *kms.Barrier }

func (n *Node) sys() sysTable { return sysTable{n.barrier} }

func (s sysTable) get(ctx context.Context, key string, opts ...raftstore.ReadOption) ([]byte, error) {
	k, err := sysKey(key)
	if err != nil {
		return nil, err
	}
	return s.b.Get(ctx, tableSys, k, opts...)
}

func (s sysTable) put(ctx context.Context, key string, val []byte) error {
	k, err := sysKey(key)
	if err != nil {
		return err
	}
	return s.b.Put(ctx, tableSys, k, val)
}

// listValues returns the values of every record under a declared prefix,
// from this node's copy.
func (s sysTable) listValues(ctx context.Context, prefix string) ([][]byte, error) {
	declared := false
	for _, r := range sysRecords {
		declared = declared || (r.suffix != nil && r.key == prefix)
	}
	if !declared {
		return nil, fmt.Errorf("node: sys table: prefix %q is not declared in sysRecords", prefix)
	}
	var vals [][]byte
	var after []byte
	for {
		page, err := s.b.List(ctx, tableSys, raftstore.ListOptions{Prefix: []byte(prefix), After: after}, raftstore.Stale())
		if err != nil {
			return nil, err
		}
		for _, kv := range page.Items {
			vals = append(vals, kv.Value)
		}
		if page.Next == nil {
			return vals, nil
		}
		after = page.Next
	}
}

// createOnce stores fresh under key unless the key holds a value, and
// returns what the key holds afterwards and whether it is fresh.
func (s sysTable) createOnce(ctx context.Context, key string, fresh []byte) ([]byte, bool, error) {
	k, err := sysKey(key)
	if err != nil {
		return nil, false, err
	}
	ok, cur, err := s.b.CompareAndSwap(ctx, tableSys, k, nil, fresh)
	if err != nil {
		return nil, false, err
	}
	if !ok {
		return cur, false, nil
	}
	return fresh, true, nil
}

func (s sysTable) delete(ctx context.Context, key string) error {
	k, err := sysKey(key)
	if err != nil {
		return err
	}
	return s.b.Delete(ctx, tableSys, k)
}

// deleteIf deletes key if it still holds old.
func (s sysTable) deleteIf(ctx context.Context, key string, old []byte) (bool, error) {
	k, err := sysKey(key)
	if err != nil {
		return false, err
	}
	res, err := s.b.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpCAS, Table: tableSys, Key: k, Old: old, Delete: true}})
	if err != nil {
		return false, err
	}
	return res.Succeeded, nil
}

// Cluster CA (owner: the cluster CA, made by init, used by join).

func (s sysTable) clusterCACert(ctx context.Context) ([]byte, error) {
	return s.get(ctx, recClusterCA)
}

func (s sysTable) putClusterCACert(ctx context.Context, pemCert []byte) error {
	return s.put(ctx, recClusterCA, pemCert)
}

// Audit (owner: the audit log's activation step).

// auditHMACKey stores fresh as the audit key unless there is one, and
// returns the key in force and whether it is fresh. It is the first record
// an unseal writes, so it makes the table.
func (s sysTable) auditHMACKey(ctx context.Context, fresh []byte) ([]byte, bool, error) {
	if err := s.b.CreateTable(ctx, tableSys); err != nil {
		return nil, false, err
	}
	return s.createOnce(ctx, recAuditKey, fresh)
}

// ACME (owner: step-ca's start).

// stepJWKPassword stores fresh as the provisioner password unless there is
// one, and returns the password in force.
func (s sysTable) stepJWKPassword(ctx context.Context, fresh []byte) ([]byte, error) {
	pw, _, err := s.createOnce(ctx, recStepPassword, fresh)
	return pw, err
}

// Join (owner: join tokens, made by CreateJoinToken, spent by Join).

func joinKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return joinPrefix + hex.EncodeToString(sum[:])
}

func (s sysTable) putJoinToken(ctx context.Context, token string, rec []byte) error {
	return s.put(ctx, joinKey(token), rec)
}

func (s sysTable) joinToken(ctx context.Context, token string) ([]byte, error) {
	return s.get(ctx, joinKey(token))
}

// deleteJoinToken deletes the token's record if it still holds rec.
func (s sysTable) deleteJoinToken(ctx context.Context, token string, rec []byte) (bool, error) {
	return s.deleteIf(ctx, joinKey(token), rec)
}

// Join challenge (owner: join: written by the member that admits a node,
// read by the node once unsealed and by the leader that promotes it).

func (s sysTable) putJoinChallenge(ctx context.Context, nodeID string, c []byte) error {
	return s.put(ctx, joinChallenge+nodeID, c)
}

func (s sysTable) joinChallenge(ctx context.Context, nodeID string) ([]byte, error) {
	return s.get(ctx, joinChallenge+nodeID)
}

func (s sysTable) deleteJoinChallenge(ctx context.Context, nodeID string) error {
	return s.delete(ctx, joinChallenge+nodeID)
}

// Leader proxy (owner: each node publishes its own API URL at unseal).

func (s sysTable) publishAPIURL(ctx context.Context, nodeID, url string) error {
	return s.put(ctx, apiURLPrefix+nodeID, []byte(url))
}

// apiURL reads a node's API URL from this node's copy (stale: forwarding
// must work while the leader changes).
// apiURLs reads every member's published API URL from this node's copy.
func (s sysTable) apiURLs(ctx context.Context) ([][]byte, error) {
	return s.listValues(ctx, apiURLPrefix)
}

func (s sysTable) apiURL(ctx context.Context, nodeID string) ([]byte, error) {
	return s.get(ctx, apiURLPrefix+nodeID, raftstore.Stale())
}
