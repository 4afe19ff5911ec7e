package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{0x42}, 32)

// newConfig builds the default arguments each test overrides.
func newConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "audit.log")
	cfg.HMACKey = testKey
	return cfg
}

func open(t *testing.T, cfg Config) *Logger {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// want is the HMAC computed independently of the package.
func want(v string) string {
	m := hmac.New(sha256.New, testKey)
	m.Write([]byte(v))
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))
}

// readLines parses every line of the file, failing on one that is not JSON.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %q", len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHasherObject(t *testing.T) {
	h, err := NewHasher(testKey, []string{"name", "meta", "n"})
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]any{
		"name":      "k1",
		"plaintext": "c2VjcmV0",
		"n":         json.Number("7"),
		"count":     3.0,
		"ok":        true,
		"nothing":   nil,
		"meta":      map[string]any{"name": "inner", "secret": "x"},
		"data":      map[string]any{"name": "under-denied", "list": []any{"a", 1.5}},
		"typed":     map[string]string{"password": "hunter2"},
		"strs":      []string{"s1"},
	}
	got := h.Object(in)
	tests := []struct {
		path string
		get  func() any
		want any
	}{
		{"allowed string", func() any { return got["name"] }, "k1"},
		{"allowed number", func() any { return got["n"] }, json.Number("7")},
		{"unknown string", func() any { return got["plaintext"] }, want("c2VjcmV0")},
		{"unknown number", func() any { return got["count"] }, want("3")},
		{"unknown bool", func() any { return got["ok"] }, want("true")},
		{"null", func() any { return got["nothing"] }, nil},
		{"allowed object: allowed field", func() any { return got["meta"].(map[string]any)["name"] }, "inner"},
		{"allowed object: other field", func() any { return got["meta"].(map[string]any)["secret"] }, want("x")},
		{"denied object: allowed name still hashed", func() any { return got["data"].(map[string]any)["name"] }, want("under-denied")},
		{"denied array", func() any { return got["data"].(map[string]any)["list"].([]any)[1] }, want("1.5")},
		{"typed map", func() any { return got["typed"].(map[string]any)["password"] }, want("hunter2")},
		{"typed slice", func() any { return got["strs"].([]any)[0] }, want("s1")},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			if g := tc.get(); g != tc.want {
				t.Fatalf("got %#v, want %#v", g, tc.want)
			}
		})
	}
	if _, err := NewHasher(testKey[:16], nil); err == nil {
		t.Fatal("short key accepted")
	}
	raw, err := h.JSON([]byte(`{"name":"a","token":"cst_abc"}`))
	if err != nil || strings.Contains(string(raw), "cst_abc") || !strings.Contains(string(raw), want("cst_abc")) {
		t.Fatalf("JSON: %s, %v", raw, err)
	}
	for _, bad := range []string{`[]`, `{} {}`, `{`} {
		if _, err := h.JSON([]byte(bad)); err == nil {
			t.Errorf("JSON(%q) accepted", bad)
		}
	}
}

func TestLogNoSecretInFile(t *testing.T) {
	cfg := newConfig(t)
	l := open(t, cfg)
	secrets := []string{"cst_Zm9vYmFyYmF6cXV4", "plaintext-value", "s3cr3t-password", "unseal-share-abc", "vault:v1:ciphertext"}
	entries := []*Entry{
		{Type: TypeRequest, RequestID: "r1", RemoteAddr: "10.0.0.1:5555", Method: "POST", Path: "kms/encrypt/k1", Operation: "update",
			Auth:    &Auth{Accessor: "acc1", DisplayName: "app", Policies: []string{"default", "app"}},
			Request: map[string]any{"name": "k1", "plaintext": secrets[1], "context": "ctx"}},
		{Type: TypeResponse, RequestID: "r1", Method: "POST", Path: "kms/encrypt/k1", Status: 200, Latency: 1500 * time.Microsecond,
			Response: map[string]any{"ciphertext": secrets[4], "version": 1}},
		{Type: TypeResponse, RequestID: "r2", Path: "auth/cert/login", Status: 200,
			Response: map[string]any{"token": secrets[0], "accessor": "acc2", "policies": []any{"app"}}},
		{Type: TypeRequest, RequestID: "r3", Path: "secrets/data/db", Request: map[string]any{"data": map[string]any{"password": secrets[2]}}},
		{Type: TypeResponse, RequestID: "r4", Path: "sys/unseal", Status: 400, ErrorCode: "invalid_share", Request: map[string]any{"key": secrets[3]}},
	}
	for _, e := range entries {
		if err := l.Log(e); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("the log holds %q in plain text", s)
		}
	}
	lines := readLines(t, cfg.Path)
	if len(lines) != len(entries) {
		t.Fatalf("%d lines, want %d", len(lines), len(entries))
	}
	first, second, third := lines[0], lines[1], lines[2]
	checks := []struct {
		name      string
		got, want any
	}{
		{"plaintext hashed", first["request"].(map[string]any)["plaintext"], want(secrets[1])},
		{"name kept", first["request"].(map[string]any)["name"], "k1"},
		{"accessor logged", first["auth"].(map[string]any)["accessor"], "acc1"},
		{"remote address", first["remote_addr"], "10.0.0.1:5555"},
		{"ciphertext hashed", second["response"].(map[string]any)["ciphertext"], want(secrets[4])},
		{"latency", second["latency_ms"], 1.5},
		{"status", second["status"], 200.0},
		{"token hashed", third["response"].(map[string]any)["token"], want(secrets[0])},
		{"type", third["type"], "response"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, first["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	fi, err := os.Stat(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestConcurrentLogsAreWholeLines(t *testing.T) {
	cfg := newConfig(t)
	cfg.SyncInterval = 10 * time.Millisecond
	l := open(t, cfg)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				e := &Entry{Type: TypeRequest, RequestID: fmt.Sprintf("%d-%d", g, i), Request: map[string]any{"blob": strings.Repeat("x", 1000)}}
				if err := l.Log(e); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if n := len(readLines(t, cfg.Path)); n != 400 {
		t.Fatalf("%d lines, want 400", n)
	}
}

func TestWriteFailures(t *testing.T) {
	t.Run("directory path", func(t *testing.T) {
		cfg := newConfig(t)
		cfg.Path = t.TempDir()
		if _, err := Open(cfg); err == nil {
			t.Fatal("opened a directory")
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		cfg := newConfig(t)
		cfg.Path = filepath.Join(t.TempDir(), "no", "such", "audit.log")
		if _, err := Open(cfg); err == nil {
			t.Fatal("opened a file in a missing directory")
		}
	})
	t.Run("full device", func(t *testing.T) {
		if _, err := os.Stat("/dev/full"); err != nil {
			t.Skip("no /dev/full")
		}
		cfg := newConfig(t)
		cfg.Path = "/dev/full"
		cfg.SyncInterval = -1
		l := open(t, cfg)
		err := l.Log(&Entry{Type: TypeRequest})
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("got %v, want ENOSPC", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		l := open(t, newConfig(t))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Log(&Entry{Type: TypeRequest}); !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
		if err := l.Reopen(); !errors.Is(err, ErrClosed) {
			t.Fatalf("reopen: got %v, want ErrClosed", err)
		}
	})
	t.Run("unencodable entry", func(t *testing.T) {
		l := open(t, newConfig(t))
		if err := l.Log(nil); err == nil {
			t.Fatal("nil entry logged")
		}
	})
	t.Run("bad config", func(t *testing.T) {
		for _, edit := range []func(*Config){
			func(c *Config) { c.Path = "" },
			func(c *Config) { c.HMACKey = nil },
			func(c *Config) { c.SyncInterval = 0 },
		} {
			cfg := newConfig(t)
			edit(&cfg)
			if _, err := Open(cfg); err == nil {
				t.Errorf("config %+v accepted", cfg)
			}
		}
	})
}

// flakyFile fails writes and syncs on demand.
type flakyFile struct {
	bytes.Buffer
	failWrite int // write only this many bytes, then fail
	failSync  bool
}

func (f *flakyFile) Write(p []byte) (int, error) {
	if f.failWrite >= 0 && f.failWrite < len(p) {
		n, _ := f.Buffer.Write(p[:f.failWrite])
		f.failWrite = -1
		return n, syscall.EIO
	}
	return f.Buffer.Write(p)
}
func (f *flakyFile) Sync() error {
	if f.failSync {
		return syscall.EIO
	}
	return nil
}
func (f *flakyFile) Close() error { return nil }

func TestPartialWriteAndSyncFailure(t *testing.T) {
	ff := &flakyFile{failWrite: -1}
	files := []file{ff, &flakyFile{failWrite: -1}}
	cfg := newConfig(t)
	cfg.SyncInterval = -1
	l, err := openWith(cfg, func(string) (file, error) { f := files[0]; files = files[1:]; return f, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ff.failWrite = 10
	if err := l.Log(&Entry{Type: TypeRequest, RequestID: "broken"}); err == nil {
		t.Fatal("partial write not reported")
	}
	if err := l.Log(&Entry{Type: TypeRequest, RequestID: "next"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(ff.String(), "\n"), "\n")
	if len(lines) != 2 || !json.Valid([]byte(lines[1])) {
		t.Fatalf("the entry after a partial write is not on a line of its own: %q", ff.String())
	}
	ff.failSync = true
	if err := l.Log(&Entry{Type: TypeRequest}); err == nil {
		t.Fatal("sync failure not reported")
	}
	if err := l.Log(&Entry{Type: TypeRequest}); err == nil {
		t.Fatal("log accepted entries after a failed fsync")
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("reopen hid the old file's failed fsync")
	}
	if err := l.Log(&Entry{Type: TypeRequest}); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

func TestReopen(t *testing.T) {
	cfg := newConfig(t)
	l := open(t, cfg)
	if err := l.Log(&Entry{Type: TypeRequest, RequestID: "before"}); err != nil {
		t.Fatal(err)
	}
	rotated := cfg.Path + ".1"
	if err := os.Rename(cfg.Path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := l.Log(&Entry{Type: TypeRequest, RequestID: "after"}); err != nil {
		t.Fatal(err)
	}
	for path, id := range map[string]string{rotated: "before", cfg.Path: "after"} {
		lines := readLines(t, path)
		if len(lines) != 1 || lines[0]["request_id"] != id {
			t.Errorf("%s: %v, want one entry %q", filepath.Base(path), lines, id)
		}
	}
	// A file that cannot be reopened leaves the old one in use.
	if err := os.Remove(cfg.Path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cfg.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("reopened onto a directory")
	}
	if err := l.Log(&Entry{Type: TypeRequest}); err != nil {
		t.Fatalf("old file no longer usable: %v", err)
	}
}

func TestExistingFileNarrowedTo0600(t *testing.T) {
	cfg := newConfig(t)
	if err := os.WriteFile(cfg.Path, []byte(`{"old":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	l := open(t, cfg)
	if err := l.Log(&Entry{Type: TypeRequest}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if n := len(readLines(t, cfg.Path)); n != 2 {
		t.Fatalf("%d lines, want the old one kept and one appended", n)
	}
}

// FuzzHasherJSON: any JSON object hashes to valid JSON in which no string
// value of a field outside the allow-list survives.
func FuzzHasherJSON(f *testing.F) {
	f.Add([]byte(`{"name":"a","token":"cst_x","data":{"name":"b","v":[1,"s",true,null]}}`))
	f.Add([]byte(`{"":{"":""}}`))
	h, err := NewHasher(testKey, []string{"name"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := h.JSON(in)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON out: %s", out)
		}
		var obj map[string]any
		if err := json.Unmarshal(out, &obj); err != nil {
			t.Fatal(err)
		}
		for k, v := range obj {
			if s, ok := v.(string); ok && k != "name" && !strings.HasPrefix(s, HashPrefix) {
				t.Fatalf("field %q kept %q", k, s)
			}
		}
	})
}

// The Hasher reuses its HMAC states: values hashed one after another and
// concurrently, short and long, each get their own independent HMAC.
func TestHasherHMACReuse(t *testing.T) {
	h, err := NewHasher(testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				v := strings.Repeat(string(rune('a'+g)), i*13)
				if got := h.HMAC(v); got != want(v) {
					t.Errorf("HMAC of %d bytes: %s, want %s", len(v), got, want(v))
					return
				}
			}
		})
	}
	wg.Wait()
}
