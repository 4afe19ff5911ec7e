package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/custos-pki/custos/api"
)

// maxResponseBytes caps a JSON response the client will read. Requests
// are capped by the server at api.DefaultMaxBodyBytes; answers are of
// the same order, with room for batches.
const maxResponseBytes = 16 << 20

// clientConfig says where the server is and how to trust and authenticate
// to it.
type clientConfig struct {
	// Addr is the server's base URL; "host:port" means https://host:port.
	Addr string
	// Token is sent in api.TokenHeader when not empty.
	Token string
	// CACert is a PEM file of the CAs to trust; empty: the system roots.
	CACert string
}

// client is a small HTTPS client of the custos API. It never follows
// redirects, so the token goes to the configured server only.
type client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// APIError is an error answer of the server.
type APIError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

// Error reads "message (code c, request r)".
func (e *APIError) Error() string {
	var extra []string
	if e.Code != "" {
		extra = append(extra, "code "+e.Code)
	}
	if e.RequestID != "" {
		extra = append(extra, "request "+e.RequestID)
	}
	if len(extra) == 0 {
		return e.Message
	}
	return e.Message + " (" + strings.Join(extra, ", ") + ")"
}

func newClient(cfg clientConfig) (*client, error) {
	base, err := parseAddr(cfg.Addr)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pemBytes, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("ca-cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("ca-cert: %s holds no PEM certificate", cfg.CACert)
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
	}
	return &client{
		base:  base,
		token: cfg.Token,
		hc: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errors.New("the server answered with a redirect; custos does not follow redirects")
			},
		},
	}, nil
}

// parseAddr accepts https URLs and bare host:port; plain http is refused.
func parseAddr(addr string) (*url.URL, error) {
	if addr == "" {
		return nil, errors.New("addr: no server address (--addr or CUSTOS_ADDR)")
	}
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("addr: %w", err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("addr: %q: custos speaks HTTPS only", addr)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("addr: %q must be https://host:port", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// pathSegment escapes s as one segment of a URL path: slashes, and dot
// segments, cannot reach another route.
func pathSegment(s string) string {
	if s == "." || s == ".." {
		return strings.ReplaceAll(s, ".", "%2E")
	}
	return url.PathEscape(s)
}

// close releases idle connections.
func (c *client) close() { c.hc.CloseIdleConnections() }

// call sends in (nil: no body) as JSON and decodes a 2xx answer into out
// (nil: the body is discarded). Statuses listed in accept are answers too,
// decoded into out: the health endpoint reports state with its status.
func (c *client) call(ctx context.Context, method, path string, in, out any, accept ...int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if !success(resp.StatusCode) && !slices.Contains(accept, resp.StatusCode) {
		return readError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	b, err := readLimited(resp.Body, maxResponseBytes)
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// download streams the body of a GET to w; no size limit: it is a
// snapshot.
func (c *client) download(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if !success(resp.StatusCode) {
		return readError(resp)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// upload POSTs size bytes of r as a binary body.
func (c *client) upload(ctx context.Context, path string, r io.Reader, size int64) error {
	resp, err := c.send(ctx, http.MethodPost, path, &sizedReader{r, size}, "application/octet-stream")
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if !success(resp.StatusCode) {
		return readError(resp)
	}
	return nil
}

func (c *client) send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	// path is escaped already (see pathSegment): parse it, do not set it.
	u, err := url.Parse(c.base.String() + path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if sr, ok := body.(*sizedReader); ok {
		req.ContentLength = sr.size
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "custos-cli")
	if c.token != "" {
		req.Header.Set(api.TokenHeader, c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, transportError(err)
	}
	return resp, nil
}

// transportError adds a hint to the errors an operator can fix.
func transportError(err error) error {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w (trust the cluster CA with --ca-cert or CUSTOS_CACERT)", err)
	case errors.As(err, &hostErr):
		return fmt.Errorf("%w (use an address the server certificate names, or add it with the server's --api-host)", err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w (custos speaks HTTPS only)", err)
	}
	return err
}

// sizedReader is a body of known length, sent with a Content-Length.
type sizedReader struct {
	io.Reader
	size int64
}

func success(status int) bool { return status >= 200 && status < 300 }

// readError turns a non-2xx answer into an *APIError. A body that is not
// the API's error document (a proxy's page) becomes the status text.
func readError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	b, _ := readLimited(resp.Body, 64<<10)
	var doc struct {
		Error *struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &doc) == nil && doc.Error != nil && doc.Error.Message != "" {
		e.Code, e.Message = doc.Error.Code, doc.Error.Message
		if doc.Error.RequestID != "" {
			e.RequestID = doc.Error.RequestID
		}
		return e
	}
	e.Message = "server answered " + resp.Status
	return e
}

var errTooLarge = errors.New("over the size limit")

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w of %d bytes", errTooLarge, limit)
	}
	return b, nil
}

// drain reads a little of what is left so the connection can be reused,
// then closes the body.
func drain(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
	_ = rc.Close()
}
