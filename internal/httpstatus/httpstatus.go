// Package httpstatus records the status a handler sends, for middleware
// that acts on it afterwards (metrics, refunds of rate-limit charges).
package httpstatus

import "net/http"

// Recorder is a ResponseWriter that remembers the first status written:
// WriteHeader's code, or 200 when the handler writes a body first. Status
// is 0 while nothing was written.
type Recorder struct {
	http.ResponseWriter
	Status int
}

// WriteHeader records code if no status was recorded yet, and sends it.
func (w *Recorder) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records 200 if no status was recorded yet, and writes b.
func (w *Recorder) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *Recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
