package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The cached series count what the label lookups counted, also beyond
// the cache's bound.
func TestHTTPMetricsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newHTTPMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		m.observe("POST", "/v1/kms/encrypt/{name}", 200, time.Millisecond)
	}
	m.observe("POST", "/v1/kms/encrypt/{name}", 403, time.Millisecond)
	for i := range maxSeries + 5 {
		m.observe(fmt.Sprint("M", i), "unmatched", 405, time.Millisecond)
		m.observe(fmt.Sprint("M", i), "unmatched", 405, time.Millisecond)
	}
	if n := len(m.series); n > maxSeries {
		t.Fatalf("%d cached series, the bound is %d", n, maxSeries)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{} // route method code -> requests
	var samples uint64
	for _, f := range families {
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			switch f.GetName() {
			case "custos_http_requests_total":
				counts[strings.Join(labels, " ")] = s.GetCounter().GetValue()
			case "custos_http_request_duration_seconds":
				samples += s.GetHistogram().GetSampleCount()
			}
		}
	}
	for labels, want := range map[string]float64{
		"code=200 method=POST route=/v1/kms/encrypt/{name}":             3,
		"code=403 method=POST route=/v1/kms/encrypt/{name}":             1,
		"code=405 method=M0 route=unmatched":                            2,
		fmt.Sprintf("code=405 method=M%d route=unmatched", maxSeries+4): 2,
	} {
		if counts[labels] != want {
			t.Errorf("requests{%s} = %v, want %v", labels, counts[labels], want)
		}
	}
	if len(counts) != maxSeries+7 || samples != 4+2*(maxSeries+5) {
		t.Fatalf("%d request series, %d latency samples; want %d and %d", len(counts), samples, maxSeries+7, 4+2*(maxSeries+5))
	}
}
