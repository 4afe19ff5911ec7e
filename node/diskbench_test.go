package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/acme"
)

// BenchmarkDiskPerIssuance issues b.N certificates on a one-node durable
// cluster, over ACME (http-01, four accounts) or over REST, then takes a
// snapshot (which compacts the Raft log down to its trailing entries) and
// reports the disk space each issuance added.
//
// What counts (issue 11's "disk per certificate, after compaction") is
// what one node keeps to hold its state: the state file, the Raft log and
// the snapshots, as the disk space they take (allocated blocks: bbolt
// grows its files sparsely). That total, less what the node held before
// the first issuance, over b.N, is the bytes/cert metric; every ACME
// object of the run is still live then. The audit log is reported apart
// (audit-B/cert) and not counted: it is the operator's record, rotated and
// shipped by its own policy, not the cluster's state.
//
// Over ACME the benchmark then collects the orders, authorizations and
// challenges as if they had expired (step gives them a day; a node keeps
// issuing for longer than that), takes a snapshot again and closes the
// node: collected-B/cert counts the state file's pages in use then (the
// pages freed are reused by later writes: the file does not shrink), the
// Raft log and the snapshot. That is the figure for a node that has been
// issuing for longer than an order lives.
//
// The Raft log holds a bounded number of entries (TrailingLogs plus those
// written until the next snapshot, which Raft considers every
// SnapshotInterval), so its share falls as b.N grows. With -v the bytes
// per issuance of every table of the state file are logged. Run it with a
// fixed count, e.g. -benchtime 2000x, and a larger one for a figure nearer
// the steady state.
func BenchmarkDiskPerIssuance(b *testing.B) {
	b.Run("acme", func(b *testing.B) { benchDisk(b, true) })
	b.Run("rest", func(b *testing.B) { benchDisk(b, false) })
}

// diskUse is what a node's data directory holds, in bytes.
type diskUse struct {
	state, log, snaps, audit int64 // disk space taken
	stateUsed                int64 // the state file's pages up to its high-water mark
	logLive, logEntries      int64 // bytes and number of log entries kept
	logUsed                  int64 // the log file's pages up to its high-water mark
	tables                   map[string][2]int64
}

// total is what counts as the node's state on disk.
func (u diskUse) total() int64 { return u.state + u.log + u.snaps }

// livePages is the bytes of the state file's pages that tables use.
func (u diskUse) livePages() int64 {
	var n int64
	for _, t := range u.tables {
		n += t[1]
	}
	return n
}

// diskSpace is the disk space the files of a node's data directory take,
// measured while it runs: the state file, the Raft log, the snapshots and
// the audit log.
func diskSpace(dataDir string) (u diskUse) {
	raft := filepath.Join(dataDir, "raft")
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return allocated(fi)
	}
	_ = filepath.Walk(filepath.Join(raft, "snapshots"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			u.snaps += allocated(fi)
		}
		return nil
	})
	u.state, u.log, u.audit = size(filepath.Join(raft, "state.db")), size(filepath.Join(raft, "raft.db")), size(filepath.Join(dataDir, "audit.log"))
	return u
}

// stateTables returns the pages up to the high-water mark of the state
// file at path and, per table, {bytes of keys and values, bytes of pages
// in use}.
func stateTables(b *testing.B, path string) (int64, map[string][2]int64) {
	b.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var used int64
	tables := map[string][2]int64{}
	err = db.View(func(tx *bolt.Tx) error {
		used = tx.Size()
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			var kv int64
			_ = bk.ForEach(func(k, v []byte) error {
				kv += int64(len(k) + len(v))
				return nil
			})
			st := bk.Stats()
			tables[string(name)] = [2]int64{kv, int64(st.BranchAlloc + st.LeafAlloc)}
			return nil
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	return used, tables
}

// measureDisk measures the data directory of a closed node.
func measureDisk(b *testing.B, dataDir string) diskUse {
	b.Helper()
	raft := filepath.Join(dataDir, "raft")
	u := diskSpace(dataDir)
	u.stateUsed, u.tables = stateTables(b, filepath.Join(raft, "state.db"))
	ldb, err := bolt.Open(filepath.Join(raft, "raft.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer ldb.Close()
	_ = ldb.View(func(tx *bolt.Tx) error {
		u.logUsed = tx.Size()
		if bk := tx.Bucket([]byte("logs")); bk != nil {
			_ = bk.ForEach(func(k, v []byte) error {
				u.logLive += int64(len(k) + len(v))
				u.logEntries++
				return nil
			})
		}
		return nil
	})
	return u
}

// measureRunning measures the data directory of a running node; its
// tables are read from a backup, a copy of the state file page for page.
func measureRunning(b *testing.B, n *Node, dataDir string) diskUse {
	b.Helper()
	u := diskSpace(dataDir)
	path := filepath.Join(b.TempDir(), "state.db")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := n.store.Backup(context.Background(), f); err != nil {
		b.Fatal(err)
	}
	u.stateUsed, u.tables = stateTables(b, path)
	return u
}

func benchDisk(b *testing.B, overACME bool) {
	h := newHTTP01(b)
	tc := newTestClusterWith(b, 1, func(c *Config) {
		c.ACMEHTTP01Port = h.port
		c.APIHosts = []string{lbHost}
	})
	n := tc.nodes[0]
	admin := newClient(b, n, tc.caFile)
	admin.token = tc.root
	admin.must("PUT", "/v1/ca/roles/web", map[string]any{"allowed_domains": []string{"example.com"}, "allow_subdomains": true, "server_flag": true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	const workers = 4
	var issue func(i int) error
	if overACME {
		l := &lb{nodes: tc.nodes, pick: func(int) int { return 0 }}
		clients := make(chan *acme.Client, workers)
		for range workers {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			c := acmeClient(b, tc, l, key)
			if _, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
				b.Fatal(err)
			}
			clients <- c
		}
		issue = func(int) error {
			c := <-clients
			defer func() { clients <- c }()
			_, err := issueVia(ctx, h, c, nil)
			return err
		}
	} else {
		pemCA, _ := os.ReadFile(tc.caFile)
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pemCA)
		hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		issue = func(i int) error {
			name := fmt.Sprintf("h%d.example.com", i)
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, key)
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), "ttl": "24h"})
			req, _ := http.NewRequest("POST", n.APIURL()+"/v1/ca/sign/web", bytes.NewReader(body))
			req.Header.Set(api.TokenHeader, tc.root)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("sign: %s", resp.Status)
			}
			return nil
		}
	}

	if err := n.store.Snapshot(); err != nil {
		b.Fatal(err)
	}
	dataDir := tc.cfgs[0].DataDir
	base := diskSpace(dataDir)

	b.ResetTimer()
	var next atomic.Int64
	l := closedLoop(workers, b.N, func(int) error { return issue(int(next.Add(1))) })
	b.StopTimer()
	l.check(b)
	if err := n.store.Snapshot(); err != nil {
		b.Fatal(err)
	}
	live := measureRunning(b, n, dataDir)
	if overACME {
		// As if every order and authorization of the run had expired:
		// the cutoff is two days from now (they live one).
		if _, err := n.step.Collect(ctx, -48*time.Hour); err != nil {
			b.Fatal(err)
		}
		if err := n.store.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		b.Fatal(err)
	}
	u := measureDisk(b, dataDir)
	per := func(v int64) float64 { return float64(v) / float64(b.N) }
	b.ReportMetric(per(live.total()-base.total()), "bytes/cert")
	if overACME {
		b.ReportMetric(per(u.livePages()+u.log+u.snaps-base.total()), "collected-B/cert")
	}
	b.ReportMetric(per(live.state-base.state), "state-B/cert")
	b.ReportMetric(per(live.log-base.log), "raftdb-B/cert")
	b.ReportMetric(per(u.logLive), "loglive-B/cert")
	b.ReportMetric(per(live.snaps-base.snaps), "snaps-B/cert")
	b.ReportMetric(per(live.audit), "audit-B/cert")
	var names []string
	for name := range live.tables {
		names = append(names, name)
	}
	sort.Strings(names)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d issuances: on disk %d B (%d B before): state file %d B (%d B used), raft.db %d B, snapshots %d B; audit %d B\n",
		b.N, live.total(), base.total(), live.state, live.stateUsed, live.log, live.snaps, live.audit)
	fmt.Fprintf(&sb, "after collection and close: state file %d B (%d B used, %d B in tables' pages), raft.db %d B (%d B used, %d entries kept, %d B), snapshots %d B\n",
		u.state, u.stateUsed, u.livePages(), u.log, u.logUsed, u.logEntries, u.logLive, u.snaps)
	fmt.Fprintf(&sb, "  %-32s %14s %14s %14s\n", "table (B/cert)", "data", "pages", "collected")
	for _, name := range names {
		t := live.tables[name]
		if t[1] == 0 {
			continue
		}
		fmt.Fprintf(&sb, "  %-32s %14.0f %14.0f %14.0f\n", name, per(t[0]), per(t[1]), per(u.tables[name][1]))
	}
	b.Log(sb.String())
}
