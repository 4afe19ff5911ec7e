package httpstatus

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRecorder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter)
		want    int
	}{
		{"nothing written", func(http.ResponseWriter) {}, 0},
		{"body first", func(w http.ResponseWriter) { w.Write([]byte("x")); w.WriteHeader(500) }, 200},
		{"status first", func(w http.ResponseWriter) { w.WriteHeader(429); w.WriteHeader(200) }, 429},
	} {
		rec := &Recorder{ResponseWriter: httptest.NewRecorder()}
		tc.handler(rec)
		if rec.Status != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, rec.Status, tc.want)
		}
	}
	rec := &Recorder{ResponseWriter: httptest.NewRecorder()}
	if err := http.NewResponseController(rec).Flush(); err != nil {
		t.Errorf("Flush through the recorder: %v", err)
	}
}
