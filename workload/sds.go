package workload

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// SecretTypeURL is the type of every SDS resource.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Resource names with a meaning of their own, as in SPIRE's agent.
const (
	DefaultSVIDName   = "default" // the caller's first SVID
	DefaultBundleName = "ROOTCA"  // the roots
)

// Limits on an SDS request.
const (
	maxResourceNames = 64
	maxResourceName  = 2048
)

// sds implements Envoy's Secret Discovery Service.
type sds struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	s *Server
}

var _ secretv3.SecretDiscoveryServiceServer = (*sds)(nil)

// StreamSecrets follows the xDS protocol as Envoy speaks it: a request
// names the resources; each response has a version and a nonce; the next
// request ACKs (or NACKs) that nonce. A new version is sent when the
// certificates or roots change, or when the names requested change.
func (x *sds) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx := stream.Context()
	c, err := attest(ctx)
	if err != nil {
		return err
	}
	reqs, errs := make(chan *discoveryv3.DiscoveryRequest, 1), make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
					err = nil
				}
				errs <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		last     *discoveryv3.DiscoveryRequest
		nonce    string
		version  int
		sentFP   [32]byte
		timer    = time.NewTimer(time.Hour)
		nextTime time.Time
	)
	defer timer.Stop()
	timer.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-x.s.done:
			return status.Error(codes.Unavailable, "the node is sealing")
		case err := <-errs:
			return err
		case req := <-reqs:
			if err := checkSDSRequest(req); err != nil {
				return err
			}
			if nonce != "" && req.ResponseNonce != nonce {
				continue // stale: answers an earlier response
			}
			if req.ErrorDetail != nil {
				x.s.log.Warn("Envoy rejected a secret", "version", req.VersionInfo, "error", truncate(req.ErrorDetail.GetMessage(), 256))
			}
			force = last == nil || !sameNames(last.ResourceNames, req.ResourceNames)
			last = req
			if !force {
				continue // an ACK
			}
		case <-timer.C:
		}
		if last == nil {
			continue
		}
		u, err := x.s.currentUpdate(ctx, c)
		if err != nil {
			if nonce == "" || status.Code(err) == codes.PermissionDenied {
				return err
			}
			x.s.log.Warn("SDS update failed; retrying", "error", err)
		} else {
			nextTime = u.next
			resp, fp, err := buildSecrets(last, u)
			if err != nil {
				return err
			}
			if force || fp != sentFP {
				if fp != sentFP {
					version++
				}
				resp.VersionInfo = strconv.Itoa(version)
				resp.Nonce = newNonce()
				if err := stream.Send(resp); err != nil {
					return err
				}
				nonce, sentFP = resp.Nonce, fp
			}
		}
		wait := x.s.cfg.Resync
		if d := nextTime.Sub(x.s.now()); !nextTime.IsZero() && d < wait {
			wait = max(d, 50*time.Millisecond)
		}
		timer.Reset(wait)
	}
}

// FetchSecrets answers one request, without a version.
func (x *sds) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkSDSRequest(req); err != nil {
		return nil, err
	}
	c, err := attest(ctx)
	if err != nil {
		return nil, err
	}
	u, err := x.s.currentUpdate(ctx, c)
	if err != nil {
		return nil, err
	}
	resp, _, err := buildSecrets(req, u)
	return resp, err
}

func checkSDSRequest(req *discoveryv3.DiscoveryRequest) error {
	if req.TypeUrl != "" && req.TypeUrl != SecretTypeURL {
		return status.Errorf(codes.InvalidArgument, "type_url %q: this server serves %s", truncate(req.TypeUrl, 128), SecretTypeURL)
	}
	if len(req.ResourceNames) > maxResourceNames {
		return status.Errorf(codes.InvalidArgument, "at most %d resource names", maxResourceNames)
	}
	for _, n := range req.ResourceNames {
		if len(n) > maxResourceName {
			return status.Errorf(codes.InvalidArgument, "a resource name is over %d bytes", maxResourceName)
		}
	}
	return nil
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func newNonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// buildSecrets answers the names of req from u; no names means every
// secret the caller has. A name the caller has no secret for is refused.
// The fingerprint covers what was sent, keys aside.
func buildSecrets(req *discoveryv3.DiscoveryRequest, u *update) (*discoveryv3.DiscoveryResponse, [32]byte, error) {
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: SecretTypeURL}
	h := sha256.New()
	add := func(sec *tlsv3.Secret, fp ...[]byte) error {
		a, err := anypb.New(sec)
		if err != nil {
			return status.Error(codes.Internal, "marshal a secret")
		}
		resp.Resources = append(resp.Resources, a)
		h.Write([]byte(sec.Name + "\n"))
		for _, b := range fp {
			h.Write(b)
		}
		return nil
	}
	roots := pemCerts(u.roots)
	names := slices.Compact(slices.Sorted(slices.Values(req.ResourceNames)))
	names = slices.DeleteFunc(names, func(n string) bool { return n == "" })
	if len(names) == 0 {
		for _, v := range u.svids {
			if err := add(tlsSecret(v.entry.SPIFFEID, v), []byte(v.serial)); err != nil {
				return nil, [32]byte{}, err
			}
		}
		for _, td := range u.tds {
			if err := add(validationSecret(td.IDString(), roots), roots); err != nil {
				return nil, [32]byte{}, err
			}
		}
	}
	var unknown []string
	for _, n := range names {
		var sec *tlsv3.Secret
		var fp []byte
		switch {
		case n == DefaultSVIDName:
			sec, fp = tlsSecret(n, u.svids[0]), []byte(u.svids[0].serial)
		case n == DefaultBundleName:
			sec, fp = validationSecret(n, roots), roots
		default:
			for _, v := range u.svids {
				if v.entry.SPIFFEID == n {
					sec, fp = tlsSecret(n, v), []byte(v.serial)
					break
				}
			}
			for _, td := range u.tds {
				if sec == nil && (n == td.IDString() || n == td.Name()) {
					sec, fp = validationSecret(n, roots), roots
				}
			}
		}
		if sec == nil {
			unknown = append(unknown, n)
			continue
		}
		if err := add(sec, fp); err != nil {
			return nil, [32]byte{}, err
		}
	}
	if len(unknown) > 0 {
		return nil, [32]byte{}, status.Errorf(codes.InvalidArgument, "the caller is not entitled to the secrets %s", truncate(strings.Join(unknown, ", "), 512))
	}
	var fp [32]byte
	h.Sum(fp[:0])
	return resp, fp, nil
}

func pemCerts(cs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range cs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func tlsSecret(name string, v *svid) *tlsv3.Secret {
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: v.key})
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(pemCerts(v.chain)), PrivateKey: inline(key),
	}}}
}

func validationSecret(name string, roots []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(roots),
	}}}
}
