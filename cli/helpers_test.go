package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/custos-pki/custos/api"
)

// fakeAPI is an HTTPS server that answers with canned API responses and
// records what it was sent. It checks the CLI's side of the contract:
// paths, methods, bodies, headers and how answers are shown. The real
// server is tested against real nodes elsewhere.
type fakeAPI struct {
	t      *testing.T
	srv    *httptest.Server
	caFile string

	mu       sync.Mutex
	handlers map[string]handlerFunc
	reqs     []recorded
}

// handlerFunc answers one request: a status and a value sent as JSON (nil:
// no body; []byte: sent as is).
type handlerFunc func(r recorded) (int, any)

type recorded struct {
	Method, Path, Query, Token, ContentType string
	Body                                    []byte
}

// decode unmarshals the recorded body into v, strictly.
func (r recorded) decode(t *testing.T, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s %s: body %s: %v", r.Method, r.Path, r.Body, err)
	}
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, handlers: map[string]handlerFunc{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes the TLS tests fail on purpose
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.caFile = filepath.Join(t.TempDir(), "ca.pem")
	block := &pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}
	if err := os.WriteFile(f.caFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// on sets the answer to "METHOD /path".
func (f *fakeAPI) on(route string, h handlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers[route] = h
}

// reply sets a fixed answer.
func (f *fakeAPI) reply(route string, status int, v any) {
	f.on(route, func(recorded) (int, any) { return status, v })
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := recorded{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Token: r.Header.Get(api.TokenHeader), ContentType: r.Header.Get("Content-Type"), Body: body,
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	h := f.handlers[r.Method+" "+r.URL.Path]
	f.mu.Unlock()
	w.Header().Set("X-Request-Id", "req-header")
	if h == nil {
		writeFakeJSON(w, http.StatusNotFound, apiErrorDoc(api.CodeNotFound, "no route for "+r.URL.Path))
		return
	}
	status, v := h(rec)
	if status >= 300 && status < 400 {
		w.Header().Set("Location", "/v1/elsewhere")
	}
	switch b := v.(type) {
	case nil:
		w.WriteHeader(status)
	case []byte:
		w.WriteHeader(status)
		_, _ = w.Write(b)
	default:
		writeFakeJSON(w, status, v)
	}
}

func writeFakeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// apiErrorDoc is the API's error document with request ID "req-1".
func apiErrorDoc(code, msg string) any {
	return map[string]any{"error": map[string]string{"code": code, "message": msg, "request_id": "req-1"}}
}

// requests returns what the server was sent, optionally only to one
// "METHOD /path".
func (f *fakeAPI) requests(route string) []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []recorded
	for _, r := range f.reqs {
		if route == "" || r.Method+" "+r.Path == route {
			out = append(out, r)
		}
	}
	return out
}

// last returns the one request sent to route, failing unless there is
// exactly one.
func (f *fakeAPI) last(route string) recorded {
	f.t.Helper()
	rs := f.requests(route)
	if len(rs) != 1 {
		f.t.Fatalf("%s: got %d requests, want 1 (all: %+v)", route, len(rs), f.requests(""))
	}
	return rs[0]
}

// scrub replaces the server's random address in s.
func (f *fakeAPI) scrub(s string) string { return strings.ReplaceAll(s, f.srv.URL, "https://SERVER") }

// result is one run of the command line.
type result struct {
	stdout, stderr string
	code           int
}

// run runs the command line against the fake server: args get --addr and
// --ca-cert of the server prepended.
func (f *fakeAPI) run(stdin string, args ...string) result {
	f.t.Helper()
	return runCLI(f.t, testDeps(), stdin, append([]string{"--addr", f.srv.URL, "--ca-cert", f.caFile}, args...)...)
}

func runCLI(t *testing.T, d deps, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), d, args, strings.NewReader(stdin), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// testDeps refuse to start nodes or take signals; server tests set their
// own.
func testDeps() deps {
	return deps{
		startNode: nil,
		signals: func() (<-chan os.Signal, func()) {
			return make(chan os.Signal), func() {}
		},
	}
}

// wantCode fails the test unless the run ended with code.
func (r result) wantCode(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// checkGolden compares got with testdata/name, or rewrites it with
// -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}
