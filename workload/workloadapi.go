package workload

import (
	"context"
	"crypto/sha256"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// workloadAPI implements the SPIFFE Workload API.
type workloadAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	s *Server
}

var _ workloadpb.SpiffeWorkloadAPIServer = (*workloadAPI)(nil)

// FetchX509SVID streams the caller's X.509-SVIDs, and again whenever one
// rotates or the roots change.
func (w *workloadAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	c, err := attest(stream.Context())
	if err != nil {
		return err
	}
	return w.s.watch(stream.Context(), func(ctx context.Context) ([32]byte, time.Time, func() error, error) {
		u, err := w.s.currentUpdate(ctx, c)
		if err != nil {
			return [32]byte{}, time.Time{}, nil, err
		}
		return u.fingerprint(), u.next, func() error { return stream.Send(x509SVIDResponse(u)) }, nil
	})
}

func x509SVIDResponse(u *update) *workloadpb.X509SVIDResponse {
	bundle := u.rootsDER()
	resp := &workloadpb.X509SVIDResponse{}
	for _, v := range u.svids {
		var chain []byte
		for _, c := range v.chain {
			chain = append(chain, c.Raw...)
		}
		resp.Svids = append(resp.Svids, &workloadpb.X509SVID{
			SpiffeId: v.entry.SPIFFEID, X509Svid: chain, X509SvidKey: v.key, Bundle: bundle,
		})
	}
	return resp
}

// FetchX509Bundles streams the roots as the bundle of every trust domain
// of the caller's entries.
func (w *workloadAPI) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream grpc.ServerStreamingServer[workloadpb.X509BundlesResponse]) error {
	c, err := attest(stream.Context())
	if err != nil {
		return err
	}
	return w.s.watch(stream.Context(), func(ctx context.Context) ([32]byte, time.Time, func() error, error) {
		tds, err := w.s.trustDomains(ctx, c)
		if err != nil {
			return [32]byte{}, time.Time{}, nil, err
		}
		roots, err := w.s.cfg.Issuer.Roots(ctx)
		if err != nil {
			return [32]byte{}, time.Time{}, nil, toStatus(err)
		}
		resp := &workloadpb.X509BundlesResponse{Bundles: map[string][]byte{}}
		h := sha256.New()
		u := update{roots: roots}
		for _, td := range tds {
			resp.Bundles[td.IDString()] = u.rootsDER()
			h.Write([]byte(td.IDString() + "\n"))
		}
		h.Write(u.rootsDER())
		var fp [32]byte
		h.Sum(fp[:0])
		return fp, time.Time{}, func() error { return stream.Send(resp) }, nil
	})
}

// trustDomains returns the trust domains of the entries c matches.
func (s *Server) trustDomains(ctx context.Context, c *caller) ([]spiffeid.TrustDomain, error) {
	es, err := s.matching(ctx, c)
	if err != nil {
		return nil, err
	}
	var tds []spiffeid.TrustDomain
	for _, e := range es {
		td := spiffeid.RequireFromString(e.SPIFFEID).TrustDomain()
		if !slices.Contains(tds, td) {
			tds = append(tds, td)
		}
	}
	slices.SortFunc(tds, func(a, b spiffeid.TrustDomain) int { return cmpString(a.Name(), b.Name()) })
	return tds, nil
}

// FetchJWTSVID signs a JWT-SVID for each of the caller's entries (or the
// one named), after checking each against its role.
func (w *workloadAPI) FetchJWTSVID(ctx context.Context, req *workloadpb.JWTSVIDRequest) (*workloadpb.JWTSVIDResponse, error) {
	if err := checkAudience(req.Audience); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := attest(ctx)
	if err != nil {
		return nil, err
	}
	es, err := w.s.matching(ctx, c)
	if err != nil {
		return nil, err
	}
	resp := &workloadpb.JWTSVIDResponse{}
	for _, e := range es {
		if req.SpiffeId != "" && e.SPIFFEID != req.SpiffeId {
			continue
		}
		tok, err := w.s.jwtSVID(ctx, e, req.Audience)
		if err != nil {
			return nil, err
		}
		resp.Svids = append(resp.Svids, &workloadpb.JWTSVID{SpiffeId: e.SPIFFEID, Svid: tok})
	}
	if len(resp.Svids) == 0 {
		return nil, status.Errorf(codes.PermissionDenied, "no identity issued: the caller is not entitled to %q", req.SpiffeId)
	}
	return resp, nil
}

// jwtSVID signs one JWT-SVID under an entry's role: the role must allow
// the SPIFFE ID, and the lifetime is the role's TTL, capped.
func (s *Server) jwtSVID(ctx context.Context, e Entry, aud []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	r, err := s.cfg.Issuer.ReadRole(ctx, e.Role)
	if err != nil {
		return "", toStatus(err)
	}
	ttl := min(r.TTL, s.cfg.JWTSVIDTTL)
	if err := s.cfg.Issuer.CheckIssue(ctx, e.Role, caIssueRequest(e.SPIFFEID, ttl)); err != nil {
		return "", toStatus(err)
	}
	tok, err := s.signJWT(ctx, e.SPIFFEID, aud, ttl)
	if err != nil {
		return "", toStatus(err)
	}
	s.log.Info("workload JWT-SVID issued", "spiffe_id", e.SPIFFEID, "entry", e.ID, "role", e.Role, "audience", aud)
	return tok, nil
}

// FetchJWTBundles streams the JWKS of every trust domain of the caller's
// entries, and again when the signing key rotates.
func (w *workloadAPI) FetchJWTBundles(_ *workloadpb.JWTBundlesRequest, stream grpc.ServerStreamingServer[workloadpb.JWTBundlesResponse]) error {
	c, err := attest(stream.Context())
	if err != nil {
		return err
	}
	return w.s.watch(stream.Context(), func(ctx context.Context) ([32]byte, time.Time, func() error, error) {
		tds, err := w.s.trustDomains(ctx, c)
		if err != nil {
			return [32]byte{}, time.Time{}, nil, err
		}
		set, err := w.s.jwtBundles(ctx, tds)
		if err != nil {
			return [32]byte{}, time.Time{}, nil, err
		}
		resp := &workloadpb.JWTBundlesResponse{Bundles: map[string][]byte{}}
		h := sha256.New()
		for _, b := range set.Bundles() {
			jwks, err := b.Marshal()
			if err != nil {
				return [32]byte{}, time.Time{}, nil, status.Error(codes.Internal, "marshal the JWT bundle")
			}
			resp.Bundles[b.TrustDomain().IDString()] = jwks
			h.Write([]byte(b.TrustDomain().IDString() + "\n"))
			h.Write(jwks)
		}
		var fp [32]byte
		h.Sum(fp[:0])
		return fp, time.Time{}, func() error { return stream.Send(resp) }, nil
	})
}

// jwtBundles is the JWT bundle of each trust domain.
func (s *Server) jwtBundles(ctx context.Context, tds []spiffeid.TrustDomain) (*jwtbundle.Set, error) {
	auth, err := s.jwtAuthorities(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	set := jwtbundle.NewSet()
	for _, td := range tds {
		set.Add(jwtbundle.FromJWTAuthorities(td, auth))
	}
	return set, nil
}

// ValidateJWTSVID checks a JWT-SVID for the caller: its signature against
// the bundles of the caller's trust domains, its expiry and the audience.
func (w *workloadAPI) ValidateJWTSVID(ctx context.Context, req *workloadpb.ValidateJWTSVIDRequest) (*workloadpb.ValidateJWTSVIDResponse, error) {
	switch {
	case req.Audience == "" || len(req.Audience) > maxAudienceBytes:
		return nil, status.Errorf(codes.InvalidArgument, "audience must be 1 to %d bytes", maxAudienceBytes)
	case req.Svid == "" || len(req.Svid) > maxTokenBytes:
		return nil, status.Errorf(codes.InvalidArgument, "svid must be 1 to %d bytes", maxTokenBytes)
	}
	c, err := attest(ctx)
	if err != nil {
		return nil, err
	}
	tds, err := w.s.trustDomains(ctx, c)
	if err != nil {
		return nil, err
	}
	set, err := w.s.jwtBundles(ctx, tds)
	if err != nil {
		return nil, err
	}
	sv, err := jwtsvid.ParseAndValidate(req.Svid, set, []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(sv.Claims)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "the claims cannot be represented")
	}
	return &workloadpb.ValidateJWTSVIDResponse{SpiffeId: sv.ID.String(), Claims: claims}, nil
}
