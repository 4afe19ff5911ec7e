// Package shamir implements Shamir's secret sharing over GF(2^8).
//
// Each byte of the secret is the constant term of its own random polynomial
// of degree threshold-1; a share is the polynomials evaluated at one nonzero
// x-coordinate. The field is the AES field (x^8 + x^4 + x^3 + x + 1), and the
// share layout is HashiCorp Vault's: the y-bytes followed by the x-coordinate
// byte, so a share is one byte longer than the secret.
//
// Field arithmetic runs in constant time: no table lookups and no branches on
// secret values.
//
// Combine cannot tell a wrong share from a right one: shares that do not
// belong together combine to a wrong secret without error. Callers must
// authenticate the result (custos opens an AES-GCM ciphertext with it).
package shamir

import (
	"crypto/rand"
	"errors"
	"io"
)

// Limits on a split.
const (
	MaxShares = 255 // x-coordinates are the nonzero bytes
	// ShareOverhead is how much longer a share is than the secret.
	ShareOverhead = 1
)

// Errors returned by Split and Combine.
var (
	ErrInvalidParams = errors.New("shamir: invalid split parameters")
	ErrInvalidShares = errors.New("shamir: invalid shares")
)

// Split divides secret into parts shares, any threshold of which recover it.
func Split(secret []byte, parts, threshold int) ([][]byte, error) {
	return split(secret, parts, threshold, rand.Reader)
}

// split is Split with the source of polynomial coefficients injected, so
// that known-answer tests can fix them.
func split(secret []byte, parts, threshold int, rnd io.Reader) ([][]byte, error) {
	switch {
	case len(secret) == 0:
		return nil, errors.Join(ErrInvalidParams, errors.New("empty secret"))
	case parts < 1 || parts > MaxShares:
		return nil, errors.Join(ErrInvalidParams, errors.New("parts must be 1 to 255"))
	case threshold < 1 || threshold > parts:
		return nil, errors.Join(ErrInvalidParams, errors.New("threshold must be 1 to parts"))
	}
	shares := make([][]byte, parts)
	for i := range shares {
		shares[i] = make([]byte, len(secret)+1)
		shares[i][len(secret)] = byte(i + 1)
	}
	// coeffs holds the non-constant coefficients of one byte's polynomial.
	coeffs := make([]byte, threshold-1)
	defer clear(coeffs)
	for idx, s := range secret {
		if _, err := io.ReadFull(rnd, coeffs); err != nil {
			return nil, err
		}
		for _, sh := range shares {
			sh[idx] = evaluate(s, coeffs, sh[len(secret)])
		}
	}
	return shares, nil
}

// evaluate returns c0 + c[0]x + c[1]x^2 + ... by Horner's rule.
func evaluate(c0 byte, c []byte, x byte) byte {
	var y byte
	for i := len(c) - 1; i >= 0; i-- {
		y = mul(y, x) ^ c[i]
	}
	return mul(y, x) ^ c0
}

// Combine recovers the secret from shares made by Split. It needs at least
// threshold shares; it reports an error only for shares that are malformed
// (different lengths, a zero or repeated x-coordinate), never for shares
// that are merely wrong.
func Combine(shares [][]byte) ([]byte, error) {
	if len(shares) == 0 || len(shares) > MaxShares {
		return nil, errors.Join(ErrInvalidShares, errors.New("need 1 to 255 shares"))
	}
	n := len(shares[0])
	if n < 2 {
		return nil, errors.Join(ErrInvalidShares, errors.New("share too short"))
	}
	xs := make([]byte, len(shares))
	var seen [256]bool
	for i, sh := range shares {
		if len(sh) != n {
			return nil, errors.Join(ErrInvalidShares, errors.New("shares differ in length"))
		}
		x := sh[n-1]
		if x == 0 || seen[x] {
			return nil, errors.Join(ErrInvalidShares, errors.New("zero or repeated x-coordinate"))
		}
		seen[x] = true
		xs[i] = x
	}
	// Lagrange basis at x = 0: l_i = prod_{j != i} x_j / (x_i + x_j).
	basis := make([]byte, len(shares))
	for i := range xs {
		l := byte(1)
		for j := range xs {
			if i != j {
				l = mul(l, div(xs[j], xs[i]^xs[j]))
			}
		}
		basis[i] = l
	}
	secret := make([]byte, n-1)
	for idx := range secret {
		var s byte
		for i, sh := range shares {
			s ^= mul(sh[idx], basis[i])
		}
		secret[idx] = s
	}
	return secret, nil
}

// mul multiplies in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, in constant time.
func mul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)
		carry := -(a >> 7) // 0xff when the high bit is set
		a = a<<1 ^ 0x1b&carry
		b >>= 1
	}
	return p
}

// inv returns a^254 = a^-1 (and 0 for 0), in constant time.
func inv(a byte) byte {
	// 254 = 0b11111110: square-and-multiply with a fixed sequence.
	r := a
	for range 6 {
		r = mul(r, r)
		r = mul(r, a)
	}
	return mul(r, r)
}

// div returns a / b; b must be nonzero.
func div(a, b byte) byte { return mul(a, inv(b)) }
