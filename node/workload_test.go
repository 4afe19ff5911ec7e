package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/workload"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// workloadCluster is a three-node cluster whose nodes each serve a
// workload socket, with a role "web" for spiffe://example.org/* whose
// certificates live seconds, and an entry giving this process's uid
// spiffe://example.org/web.
type workloadCluster struct {
	*testCluster
	api   *client
	entry api.WorkloadEntry
}

func newWorkloadCluster(t *testing.T) *workloadCluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "cw") // short: a socket path is at most ~104 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tc := newTestClusterWith(t, 3, func(c *Config) { c.WorkloadAPISocket = filepath.Join(dir, c.NodeID+".sock") })
	wc := &workloadCluster{testCluster: tc, api: newClient(t, tc.nodes[0], tc.caFile)}
	wc.api.token = tc.root
	wc.api.must(http.MethodPut, "/v1/ca/roles/web", api.CARole{AllowedURISANs: []string{"spiffe://example.org/*"}, TTL: "6s", MaxTTL: "1h"}, nil)
	wc.api.must(http.MethodPost, "/v1/ca/workloads", api.WorkloadEntry{
		SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid())}, Role: "web",
	}, &wc.entry)
	return wc
}

func (wc *workloadCluster) addr(i int) string { return "unix://" + wc.cfgs[i].WorkloadAPISocket }

// roots are the CA's roots as the REST API serves them.
func (wc *workloadCluster) roots(t *testing.T) []*x509.Certificate {
	t.Helper()
	svc, err := wc.nodes[0].Services()
	if err != nil {
		t.Fatal(err)
	}
	roots, err := svc.CA.Roots(context.Background())
	if err != nil || len(roots) == 0 {
		t.Fatalf("roots: %v", err)
	}
	return roots
}

func dialSocket(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestWorkloadAPIAndSDS(t *testing.T) {
	wc := newWorkloadCluster(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	custosRoots := x509bundle.FromX509Authorities(td, wc.roots(t))

	t.Run("X509SourceOnAFollowerChainsToCustosAndRotates", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(wc.addr(1))))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		first, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if first.ID.String() != "spiffe://example.org/web" {
			t.Fatalf("SPIFFE ID %s", first.ID)
		}
		if _, _, err := x509svid.Verify(first.Certificates, custosRoots); err != nil {
			t.Fatalf("the SVID does not chain to custos's roots: %v", err)
		}
		leaf := first.Certificates[0]
		if len(leaf.OCSPServer) == 0 || len(leaf.CRLDistributionPoints) == 0 {
			t.Fatalf("the SVID has no AIA or CDP: %v %v", leaf.OCSPServer, leaf.CRLDistributionPoints)
		}
		var rec api.CACert
		wc.api.must(http.MethodGet, "/v1/ca/certs/"+fmt.Sprintf("%x", leaf.SerialNumber), nil, &rec)
		if rec.Role != "web" || rec.Status != "valid" {
			t.Fatalf("inventory record %+v", rec)
		}
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(wc.addr(1)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		bundles, err := c.FetchX509Bundles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bundles.GetX509BundleForTrustDomain(td)
		if err != nil || !b.Equal(custosRoots) || bundles.Len() != 1 {
			t.Fatalf("FetchX509Bundles: %d bundles, %v: want custos's roots for example.org", bundles.Len(), err)
		}
		// The role's TTL is 6s: a new SVID must arrive on the stream before
		// the first one expires.
		var next *x509svid.SVID
		waitFor(t, 90*time.Second, func() bool {
			s, err := src.GetX509SVID()
			if err == nil && s.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				next = s
				return true
			}
			return false
		})
		if !time.Now().Before(leaf.NotAfter) {
			t.Fatalf("rotated only after the first SVID expired (%v)", leaf.NotAfter)
		}
		if _, _, err := x509svid.Verify(next.Certificates, custosRoots); err != nil {
			t.Fatalf("the rotated SVID does not verify: %v", err)
		}
	})

	t.Run("JWTSourceAndValidate", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		opt := workloadapi.WithClientOptions(workloadapi.WithAddr(wc.addr(2)))
		src, err := workloadapi.NewJWTSource(ctx, opt)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		svid, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "backend"})
		if err != nil {
			t.Fatal(err)
		}
		if svid.ID.String() != "spiffe://example.org/web" || time.Until(svid.Expiry) > 7*time.Second {
			t.Fatalf("JWT-SVID %s expires %v: want the role's 6s TTL", svid.ID, svid.Expiry)
		}
		if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), src, []string{"backend"}); err != nil {
			t.Fatalf("the JWT-SVID does not verify with the JWT bundle: %v", err)
		}
		if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), src, []string{"other"}); err == nil {
			t.Fatal("a JWT-SVID for another audience was accepted")
		}
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(wc.addr(0)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, err := c.ValidateJWTSVID(ctx, svid.Marshal(), "backend")
		if err != nil || got.ID != svid.ID {
			t.Fatalf("ValidateJWTSVID on another node: %v", err)
		}
		if _, err := c.ValidateJWTSVID(ctx, svid.Marshal()+"x", "backend"); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("a tampered JWT-SVID: %v, want InvalidArgument", err)
		}
		jwtKey, err := wc.nodes[0].svc.KMS.Key(ctx, "_custos-spiffe-jwt")
		if err != nil || jwtKey.Exportable {
			t.Fatalf("the JWT key: %+v, %v: want a non-exportable KMS key", jwtKey, err)
		}
	})

	t.Run("SDSStreamSecretsAsEnvoy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sds := secretv3.NewSecretDiscoveryServiceClient(dialSocket(t, wc.addr(2)))
		stream, err := sds.StreamSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := &discoveryv3.DiscoveryRequest{
			Node:          &corev3.Node{Id: "envoy-test", Cluster: "web"},
			ResourceNames: []string{"spiffe://example.org/web", "ROOTCA"},
			TypeUrl:       workload.SecretTypeURL,
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		leaf1 := checkSDSResponse(t, resp, wc.roots(t))
		// ACK as Envoy does, then wait for the rotated certificate.
		req.VersionInfo, req.ResponseNonce = resp.VersionInfo, resp.Nonce
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp2, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp2.VersionInfo == resp.VersionInfo || resp2.Nonce == resp.Nonce {
			t.Fatalf("a pushed update kept version %q nonce %q", resp2.VersionInfo, resp2.Nonce)
		}
		leaf2 := checkSDSResponse(t, resp2, wc.roots(t))
		if leaf2.SerialNumber.Cmp(leaf1.SerialNumber) == 0 {
			t.Fatal("the pushed update holds the same certificate")
		}
		if !time.Now().Before(leaf1.NotAfter) {
			t.Fatal("the certificate rotated only after it expired")
		}

		// A name the workload has no secret for is refused.
		bad, err := sds.StreamSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := bad.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://example.org/db"}, TypeUrl: workload.SecretTypeURL}); err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("a secret the caller is not entitled to: %v, want InvalidArgument", err)
		}
	})

	t.Run("NoSecurityHeaderIsRefused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		raw := workloadpb.NewSpiffeWorkloadAPIClient(dialSocket(t, wc.addr(0)))
		if _, err := raw.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"backend"}}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("FetchJWTSVID without the header: %v, want InvalidArgument", err)
		}
		stream, err := raw.FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("FetchX509SVID without the header: %v, want InvalidArgument", err)
		}
	})

	t.Run("EntriesAreCheckedAgainstTheirRole", func(t *testing.T) {
		uid := []string{"unix:uid:" + strconv.Itoa(os.Getuid())}
		for _, tc := range []struct {
			name   string
			entry  api.WorkloadEntry
			status int
			code   string
		}{
			{"outside the role", api.WorkloadEntry{SPIFFEID: "spiffe://other.org/web", Selectors: uid, Role: "web"}, 400, api.CodeInvalidArgument},
			{"no such role", api.WorkloadEntry{SPIFFEID: "spiffe://example.org/web", Selectors: uid, Role: "nope"}, 404, api.CodeNotFound},
			{"bad selector", api.WorkloadEntry{SPIFFEID: "spiffe://example.org/x", Selectors: []string{"unix:uid:me"}, Role: "web"}, 400, api.CodeInvalidArgument},
			{"no selector", api.WorkloadEntry{SPIFFEID: "spiffe://example.org/x", Role: "web"}, 400, api.CodeInvalidArgument},
			{"not a SPIFFE ID", api.WorkloadEntry{SPIFFEID: "https://example.org/x", Selectors: uid, Role: "web"}, 400, api.CodeInvalidArgument},
			{"the same registration", api.WorkloadEntry{SPIFFEID: "spiffe://example.org/web", Selectors: uid, Role: "web"}, 409, api.CodeConflict},
			{"an ID from the client", api.WorkloadEntry{ID: "00", SPIFFEID: "spiffe://example.org/y", Selectors: uid, Role: "web"}, 400, api.CodeInvalidArgument},
		} {
			if st, code := wc.api.do(http.MethodPost, "/v1/ca/workloads", tc.entry, nil); st != tc.status || code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, st, code, tc.status, tc.code)
			}
		}
		var list api.WorkloadEntryList
		wc.api.must(http.MethodGet, "/v1/ca/workloads", nil, &list)
		if len(list.Entries) != 1 || list.Entries[0].ID != wc.entry.ID {
			t.Fatalf("entries after refused creations: %+v", list.Entries)
		}
		var got api.WorkloadEntry
		wc.api.must(http.MethodGet, "/v1/ca/workloads/"+wc.entry.ID, nil, &got)
		if got.SPIFFEID != "spiffe://example.org/web" || got.Role != "web" {
			t.Fatalf("read entry: %+v", got)
		}
		if st, code := wc.api.do(http.MethodGet, "/v1/ca/workloads/zz", nil, nil); st != 400 || code != api.CodeInvalidArgument {
			t.Fatalf("a malformed entry ID: %d %s", st, code)
		}
	})

	t.Run("SealClosesTheSocket", func(t *testing.T) {
		c := newClient(t, wc.nodes[2], wc.caFile)
		c.token = wc.root
		c.must(http.MethodPost, "/v1/sys/seal", nil, nil)
		if _, err := os.Stat(wc.cfgs[2].WorkloadAPISocket); !os.IsNotExist(err) {
			t.Fatalf("the socket of a sealed node: %v", err)
		}
		wc.unseal(t, 2)
		if _, err := os.Stat(wc.cfgs[2].WorkloadAPISocket); err != nil {
			t.Fatalf("the socket after unseal: %v", err)
		}
	})

	t.Run("UnregisteredCallerIsDenied", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Only another uid is registered once this process's entry is gone.
		var other api.WorkloadEntry
		wc.api.must(http.MethodPost, "/v1/ca/workloads", api.WorkloadEntry{
			SPIFFEID: "spiffe://example.org/db", Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid()+1)}, Role: "web",
		}, &other)
		if st, _ := wc.api.do(http.MethodDelete, "/v1/ca/workloads/"+wc.entry.ID, nil, nil); st != http.StatusNoContent {
			t.Fatalf("delete entry: %d", st)
		}
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(wc.addr(1)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Nodes read the entries again within Resync (5s).
		waitFor(t, 30*time.Second, func() bool {
			_, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "backend"})
			return status.Code(err) == codes.PermissionDenied
		})
		if _, err := c.FetchX509SVID(ctx); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("FetchX509SVID of an unregistered caller: %v, want PermissionDenied", err)
		}
		sds := secretv3.NewSecretDiscoveryServiceClient(dialSocket(t, wc.addr(1)))
		if _, err := sds.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: workload.SecretTypeURL}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("SDS for an unregistered caller: %v, want PermissionDenied", err)
		}
	})
}

// checkSDSResponse checks a response to [SPIFFE ID, ROOTCA]: a certificate
// chain whose key is the private key sent with it, verifying to the roots
// sent, which are custos's. It returns the leaf.
func checkSDSResponse(t *testing.T, resp *discoveryv3.DiscoveryResponse, want []*x509.Certificate) *x509.Certificate {
	t.Helper()
	if resp.TypeUrl != workload.SecretTypeURL || resp.VersionInfo == "" || resp.Nonce == "" || len(resp.Resources) != 2 {
		t.Fatalf("response: type %q version %q nonce %q, %d resources", resp.TypeUrl, resp.VersionInfo, resp.Nonce, len(resp.Resources))
	}
	var kp tls.Certificate
	pool := x509.NewCertPool()
	var rootsPEM []byte
	for _, a := range resp.Resources {
		var sec tlsv3.Secret
		if err := a.UnmarshalTo(&sec); err != nil {
			t.Fatal(err)
		}
		switch sec.Name {
		case "spiffe://example.org/web":
			tc := sec.GetTlsCertificate()
			var err error
			kp, err = tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
			if err != nil {
				t.Fatalf("tls_certificate: %v", err)
			}
		case "ROOTCA":
			rootsPEM = sec.GetValidationContext().GetTrustedCa().GetInlineBytes()
			pool.AppendCertsFromPEM(rootsPEM)
		default:
			t.Fatalf("unexpected secret %q", sec.Name)
		}
	}
	var wantPEM []byte
	for _, r := range want {
		wantPEM = append(wantPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	if string(rootsPEM) != string(wantPEM) {
		t.Fatal("validation_context roots differ from custos's roots")
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range kp.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the SDS certificate does not verify: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/web" || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("leaf URIs %v EKU %v", leaf.URIs, leaf.ExtKeyUsage)
	}
	return leaf
}
