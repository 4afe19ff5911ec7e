package ca

import (
	"bytes"
	"crypto/x509"
	"sync"
)

// signedHere remembers the certificates SignTemplate signed, by pointer,
// with the intermediate that signed them, until PrepareRecord records
// them: it then knows their issuer without checking their signature once
// more (the kms checked it as it signed). Only the pointer SignTemplate
// returned finds an entry, so a certificate from anywhere else, even one
// equal to it, is checked as before. Entries that are never recorded (a
// caller that gave up) are dropped all at once past maxSignedHere.
type signedHere struct {
	mu sync.Mutex
	m  map[*x509.Certificate]string // certificate -> issuer ID
}

const maxSignedHere = 4096

// remember notes that the intermediate with this certificate signed cert,
// if it is one of set's.
func (s *signedHere) remember(cert, parent *x509.Certificate, set *issuers) {
	for _, iss := range set.all {
		if bytes.Equal(iss.cert.Raw, parent.Raw) {
			s.mu.Lock()
			if s.m == nil || len(s.m) >= maxSignedHere {
				s.m = map[*x509.Certificate]string{}
			}
			s.m[cert] = iss.id
			s.mu.Unlock()
			return
		}
	}
}

// take returns the intermediate of set that signed cert here and forgets
// cert, or nil.
func (s *signedHere) take(cert *x509.Certificate, set *issuers) *issuer {
	s.mu.Lock()
	id, ok := s.m[cert]
	delete(s.m, cert)
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return set.byID(id)
}
