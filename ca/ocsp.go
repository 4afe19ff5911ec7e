package ca

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/ocsp"
)

// OCSP answers a DER OCSP request (RFC 6960) with a DER response signed by
// the intermediate that issued the certificate: good, revoked, or unknown
// for a serial this CA never recorded. Requests that do not parse get the
// malformedRequest response and requests for an issuer that is not this
// CA's (or before Init) get unauthorized, both with a nil error. A non-nil error comes with
// the internalError response (or tryLater while sealed), to be sent as is.
func (c *CA) OCSP(ctx context.Context, reqDER []byte) ([]byte, error) {
	req, err := ocsp.ParseRequest(reqDER)
	if err != nil {
		return ocsp.MalformedRequestErrorResponse, nil
	}
	set, err := c.issuers(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	if err != nil {
		return ocspFailure(err), err
	}
	iss := set.matchOCSP(req)
	if iss == nil {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	if req.SerialNumber == nil || req.SerialNumber.Sign() <= 0 {
		return ocsp.MalformedRequestErrorResponse, nil
	}
	now := c.now()
	tmpl := ocsp.Response{
		Status: ocsp.Unknown, SerialNumber: req.SerialNumber, IssuerHash: req.HashAlgorithm,
		ThisUpdate: now, NextUpdate: now.Add(c.cfg.OCSPValidity),
	}
	cert, found, err := c.getCert(ctx, serialString(req.SerialNumber))
	if err != nil {
		return ocspFailure(err), err
	}
	if found && cert.Issuer == iss.id {
		tmpl.Status = ocsp.Good
		if cert.Status == StatusRevoked {
			tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, cert.RevokedAt, cert.RevocationReason
		}
	}
	signer, err := c.kms.Signer(ctx, iss.key, iss.keyVersion)
	if err != nil {
		return ocspFailure(err), err
	}
	resp, err := ocsp.CreateResponse(iss.cert, iss.cert, tmpl, signer)
	if err != nil {
		return ocsp.InternalErrorErrorResponse, fmt.Errorf("ca: sign OCSP response: %w", err)
	}
	if _, err := ocsp.ParseResponse(resp, iss.cert); err != nil {
		return ocsp.InternalErrorErrorResponse, fmt.Errorf("ca: sign OCSP response: the signature does not verify: %w", err)
	}
	return resp, nil
}

// ocspFailure is the OCSP error response for err: tryLater when the node
// cannot answer now (sealed, no leader), internalError otherwise.
func ocspFailure(err error) []byte {
	if isUnavailable(err) {
		return ocsp.TryLaterErrorResponse
	}
	return ocsp.InternalErrorErrorResponse
}

// matchOCSP finds the intermediate named by the request's issuer hashes.
func (s *issuers) matchOCSP(req *ocsp.Request) *issuer {
	if !req.HashAlgorithm.Available() {
		return nil
	}
	for _, iss := range s.all {
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(iss.cert.RawSubjectPublicKeyInfo, &spki); err != nil {
			continue
		}
		h := req.HashAlgorithm.New()
		h.Write(iss.cert.RawSubject)
		name := h.Sum(nil)
		h.Reset()
		h.Write(spki.PublicKey.RightAlign())
		if bytes.Equal(name, req.IssuerNameHash) && bytes.Equal(h.Sum(nil), req.IssuerKeyHash) {
			return iss
		}
	}
	return nil
}
