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
// snapshot (which compacts the Raft log down to its trailing entries),
// closes the node and reports the bytes each issuance added to the state
// file, the Raft log file, the snapshots and the audit log, and, with -v,
// the bytes per issuance of every table of the state file. Run it with a
// fixed count, e.g. -benchtime 2000x.
func BenchmarkDiskPerIssuance(b *testing.B) {
	b.Run("acme", func(b *testing.B) { benchDisk(b, true) })
	b.Run("rest", func(b *testing.B) { benchDisk(b, false) })
}

// diskUse is what a node's data directory holds, in bytes.
type diskUse struct {
	state, log, snaps, audit int64
	stateUsed, stateFree     int64               // pages up to the high-water mark; free pages among them
	logLive, logEntries      int64               // bytes and number of log entries kept
	logUsed, logFree         int64               // the log file's pages up to its high-water mark; free pages among them
	tables                   map[string][2]int64 // bucket -> {bytes of keys and values, bytes of pages in use}
}

func measureDisk(b *testing.B, dataDir string) diskUse {
	b.Helper()
	raft := filepath.Join(dataDir, "raft")
	u := diskUse{tables: map[string][2]int64{}}
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	u.state, u.log, u.audit = size(filepath.Join(raft, "state.db")), size(filepath.Join(raft, "raft.db")), size(filepath.Join(dataDir, "audit.log"))
	_ = filepath.Walk(filepath.Join(raft, "snapshots"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			u.snaps += fi.Size()
		}
		return nil
	})
	db, err := bolt.Open(filepath.Join(raft, "state.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	u.stateFree = int64(db.Stats().FreePageN) * int64(db.Info().PageSize)
	err = db.View(func(tx *bolt.Tx) error {
		u.stateUsed = tx.Size()
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			var kv int64
			_ = bk.ForEach(func(k, v []byte) error {
				kv += int64(len(k) + len(v))
				return nil
			})
			st := bk.Stats()
			u.tables[string(name)] = [2]int64{kv, int64(st.BranchAlloc + st.LeafAlloc)}
			return nil
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	ldb, err := bolt.Open(filepath.Join(raft, "raft.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer ldb.Close()
	u.logFree = int64(ldb.Stats().FreePageN) * int64(ldb.Info().PageSize)
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

// newestSnapshot is the size of the largest file under the snapshot
// directory: the state as of the newest snapshot.
func newestSnapshot(dataDir string) int64 {
	var max int64
	_ = filepath.Walk(filepath.Join(dataDir, "raft", "snapshots"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() > max {
			max = fi.Size()
		}
		return nil
	})
	return max
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
	base := newestSnapshot(dataDir)

	b.ResetTimer()
	var next atomic.Int64
	l := closedLoop(workers, b.N, func(int) error { return issue(int(next.Add(1))) })
	b.StopTimer()
	l.check(b)
	if err := n.store.Snapshot(); err != nil {
		b.Fatal(err)
	}
	if err := n.Close(); err != nil {
		b.Fatal(err)
	}
	u := measureDisk(b, dataDir)
	per := func(v int64) float64 { return float64(v) / float64(b.N) }
	b.ReportMetric(per(u.stateUsed-base), "state-B/cert")
	b.ReportMetric(per(u.log), "raftdb-B/cert")
	b.ReportMetric(per(u.logLive), "loglive-B/cert")
	b.ReportMetric(per(u.snaps), "snaps-B/cert")
	b.ReportMetric(per(u.audit), "audit-B/cert")
	var names []string
	for name := range u.tables {
		names = append(names, name)
	}
	sort.Strings(names)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d issuances: state file %d B (%d B used, %d B free pages, %d B before), raft.db %d B (%d B used, %d B free pages, %d entries kept, %d B), snapshots %d B, audit %d B\n",
		b.N, u.state, u.stateUsed, u.stateFree, base, u.log, u.logUsed, u.logFree, u.logEntries, u.logLive, u.snaps, u.audit)
	for _, name := range names {
		t := u.tables[name]
		if t[1] == 0 {
			continue
		}
		fmt.Fprintf(&sb, "  %-40s data %8.0f B/cert, pages %8.0f B/cert\n", name, per(t[0]), per(t[1]))
	}
	b.Log(sb.String())
}
