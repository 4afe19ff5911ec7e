// Package envoy holds an example Envoy bootstrap that takes its mTLS
// certificate and trust bundle from custos over SDS; the test checks that
// it is a valid Envoy v3 bootstrap naming the secrets custos serves.
package envoy

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	// The typed configs the bootstrap names.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

func TestBootstrapIsValidAndUsesCustosSDS(t *testing.T) {
	raw, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("not an Envoy v3 bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("invalid bootstrap: %v", err)
	}
	var sdsPipe string
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.Name == "custos_sds" {
			sdsPipe = c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath()
		}
	}
	if !strings.HasSuffix(sdsPipe, "workload.sock") {
		t.Fatalf("the SDS cluster does not point at a workload socket: %q", sdsPipe)
	}
	// Every TLS context takes its certificate and its validation context
	// over SDS, with names custos serves.
	var contexts []*tlsv3.CommonTlsContext
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			if ts := fc.GetTransportSocket(); ts != nil {
				var d tlsv3.DownstreamTlsContext
				if err := ts.GetTypedConfig().UnmarshalTo(&d); err != nil {
					t.Fatal(err)
				}
				contexts = append(contexts, d.GetCommonTlsContext())
			}
		}
	}
	for _, c := range bs.GetStaticResources().GetClusters() {
		if ts := c.GetTransportSocket(); ts != nil {
			var u tlsv3.UpstreamTlsContext
			if err := ts.GetTypedConfig().UnmarshalTo(&u); err != nil {
				t.Fatal(err)
			}
			contexts = append(contexts, u.GetCommonTlsContext())
		}
	}
	if len(contexts) != 2 {
		t.Fatalf("%d TLS contexts, want an inbound and an outbound one", len(contexts))
	}
	for _, c := range contexts {
		certs := c.GetTlsCertificateSdsSecretConfigs()
		vc := c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()
		if len(certs) != 1 || certs[0].Name != "spiffe://example.org/web" || vc.GetName() != "spiffe://example.org" {
			t.Fatalf("SDS names: certificate %v, validation %q", certs, vc.GetName())
		}
		for _, sc := range []string{certs[0].GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName(),
			vc.GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()} {
			if sc != "custos_sds" {
				t.Fatalf("SDS from cluster %q, want custos_sds", sc)
			}
		}
	}
}
