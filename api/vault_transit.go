package api

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/kms"
	"github.com/go-chi/chi/v5"
)

// The Vault transit routes, over the native kms handlers. Ciphertexts,
// signatures and HMACs go out as "vault:v<N>:..." and come in with either
// prefix, "vault:" or "custos:".
func (s *Server) vaultTransitRoutes() []route {
	get, post, del := http.MethodGet, http.MethodPost, http.MethodDelete
	const t = "/v1/transit/"
	rt := func(method, pattern string, c auth.Capability, op, policy string, h http.HandlerFunc) route {
		return route{method: method, pattern: t + pattern, cap: c, op: op, policy: policyAs(policy), h: h}
	}
	upd := auth.CapUpdate
	rs := []route{
		rt(get, "keys", auth.CapList, "kms-key-list", "kms/keys", handle(withKMS(s, noName, s.kmsKeyList))),
		rt(post, "keys/{name}", auth.CapCreate, "kms-key-create", "kms/keys/{name}", handle(withKMS(s, newKeyName, vaultKeyCreate))),
		rt(get, "keys/{name}", auth.CapRead, "kms-key-read", "kms/keys/{name}", handle(withKMS(s, keyName, vaultKeyRead))),
		rt(del, "keys/{name}", auth.CapDelete, "kms-key-delete", "kms/keys/{name}", handle(withKMS(s, keyName, vaultKeyDelete))),
		rt(post, "keys/{name}/rotate", upd, "kms-key-rotate", "kms/keys/{name}/rotate", handle(withKMS(s, keyName, vaultKeyRotate))),
		rt(post, "keys/{name}/config", upd, "kms-key-config", "kms/keys/{name}/config", handle(withKMS(s, keyName, vaultKeyConfig))),
		rt(get, "export/{type}/{name}", auth.CapRead|auth.CapSudo, "kms-export", "kms/export/{name}", handle(withKMS(s, keyName, s.vaultExport))),
		rt(get, "export/{type}/{name}/{version}", auth.CapRead|auth.CapSudo, "kms-export", "kms/export/{name}", handle(withKMS(s, keyName, s.vaultExport))),
		rt(post, "encrypt/{name}", upd, "kms-encrypt", "kms/encrypt/{name}", handle(withKMS(s, keyName, s.vaultCrypt(kms.BatchEncrypt)))),
		rt(post, "decrypt/{name}", upd, "kms-decrypt", "kms/decrypt/{name}", handle(withKMS(s, keyName, s.vaultCrypt(kms.BatchDecrypt)))),
		rt(post, "rewrap/{name}", upd, "kms-rewrap", "kms/rewrap/{name}", handle(withKMS(s, keyName, s.vaultCrypt(kms.BatchRewrap)))),
		rt(post, "datakey/{plaintext}/{name}", upd, "kms-datakey", "kms/datakey/{name}", handle(withKMS(s, keyName, s.vaultDataKey))),
		rt(post, "random", upd, "kms-random", "kms/random", handle(withKMS(s, noName, s.vaultRandom))),
		rt(post, "random/{a}", upd, "kms-random", "kms/random", handle(withKMS(s, noName, s.vaultRandom))),
		rt(post, "random/{a}/{b}", upd, "kms-random", "kms/random", handle(withKMS(s, noName, s.vaultRandom))),
	}
	for _, op := range []struct {
		name, policy string
		op           kms.BatchOp
	}{{"sign", "kms/sign/{name}", kms.BatchSign}, {"verify", "kms/verify/{name}", kms.BatchVerify}, {"hmac", "kms/hmac/{name}", kms.BatchHMAC}} {
		h := handle(withKMS(s, keyName, s.vaultCrypt(op.op)))
		rs = append(rs,
			rt(post, op.name+"/{name}", upd, "kms-"+op.name, op.policy, h),
			rt(post, op.name+"/{name}/{hash}", upd, "kms-"+op.name, op.policy, h))
	}
	return rs
}

// vaultKeyRequest is transit/keys/{name} (create) and .../config.
type vaultKeyRequest struct {
	Type                 string     `json:"type"`
	Exportable           *vBool     `json:"exportable"`
	DeletionAllowed      *vBool     `json:"deletion_allowed"`
	Derived              vBool      `json:"derived"`
	Convergent           vBool      `json:"convergent_encryption"`
	AutoRotatePeriod     *vDuration `json:"auto_rotate_period"`
	MinDecryptionVersion *vInt      `json:"min_decryption_version"`
	MinEncryptionVersion *vInt      `json:"min_encryption_version"`
}

func vaultKeyCreate(r *http.Request, k *kms.KMS, name string, req *vaultKeyRequest) (any, error) {
	if req.Derived || req.Convergent {
		return nil, invalid("derived and convergent keys are not supported")
	}
	o := kms.KeyOptions{Type: kms.KeyType(req.Type)}
	if o.Type == "" {
		o.Type = kms.TypeAES256GCM96 // Vault's default
	}
	if req.Exportable != nil {
		o.Exportable = bool(*req.Exportable)
	}
	if req.DeletionAllowed != nil {
		o.DeletionAllowed = bool(*req.DeletionAllowed)
	}
	if req.AutoRotatePeriod != nil {
		o.AutoRotatePeriod = time.Duration(*req.AutoRotatePeriod)
	}
	return vaultKey(r, k, name)(k.CreateKey(r.Context(), name, o))
}

func vaultKeyConfig(r *http.Request, k *kms.KMS, name string, req *vaultKeyRequest) (any, error) {
	u := kms.KeyUpdate{}
	if req.MinDecryptionVersion != nil {
		u.MinDecryptionVersion = new(int(*req.MinDecryptionVersion))
	}
	if req.MinEncryptionVersion != nil {
		u.MinEncryptionVersion = new(int(*req.MinEncryptionVersion))
	}
	if req.Exportable != nil {
		u.Exportable = new(bool(*req.Exportable))
	}
	if req.DeletionAllowed != nil {
		u.DeletionAllowed = new(bool(*req.DeletionAllowed))
	}
	if req.AutoRotatePeriod != nil {
		u.AutoRotatePeriod = new(time.Duration(*req.AutoRotatePeriod))
	}
	return vaultKey(r, k, name)(k.UpdateKey(r.Context(), name, u))
}

func vaultKeyRead(r *http.Request, k *kms.KMS, name string, _ *noBody) (any, error) {
	return vaultKey(r, k, name)(k.Key(r.Context(), name))
}

func vaultKeyRotate(r *http.Request, k *kms.KMS, name string, _ *noBody) (any, error) {
	return vaultKey(r, k, name)(k.RotateKey(r.Context(), name))
}

func vaultKeyDelete(r *http.Request, k *kms.KMS, name string, _ *noBody) (any, error) {
	_, err := k.ScheduleDeletion(r.Context(), name, 0)
	return nil, err
}

// vaultKey answers with a key as transit/keys/{name} reads it: keys maps
// each live version from min_decryption_version on to its creation time (unix seconds) or, for signing
// keys, to its public key.
func vaultKey(r *http.Request, k *kms.KMS, name string) func(ki kms.KeyInfo, err error) (any, error) {
	return func(ki kms.KeyInfo, err error) (any, error) {
		if err != nil {
			return nil, err
		}
		sign := ki.Type != kms.TypeHMAC && !strings.HasPrefix(string(ki.Type), "aes")
		keys := map[string]any{}
		for _, v := range ki.Versions {
			if v.State == kms.StateDestroyed || v.Version < ki.MinDecryptionVersion {
				continue // as Vault archives them
			}
			n := strconv.Itoa(v.Version)
			if !sign {
				keys[n] = v.Created.Unix()
				continue
			}
			entry := map[string]any{"creation_time": v.Created, "name": string(ki.Type)}
			if pub, err := k.PublicKey(r.Context(), name, v.Version); err == nil {
				if der, err := x509.MarshalPKIXPublicKey(pub); err == nil {
					entry["public_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
				}
			}
			keys[n] = entry
		}
		enc := !sign && ki.Type != kms.TypeHMAC
		return map[string]any{
			"name": ki.Name, "type": string(ki.Type), "keys": keys, "latest_version": ki.Latest,
			"min_available_version": 0, "min_decryption_version": ki.MinDecryptionVersion,
			"min_encryption_version": ki.MinEncryptionVersion, "deletion_allowed": ki.DeletionAllowed,
			"derived": false, "exportable": ki.Exportable, "allow_plaintext_backup": false,
			"supports_encryption": enc, "supports_decryption": enc, "supports_derivation": false,
			"supports_signing": sign, "imported_key": false, "auto_rotate_period": seconds(ki.AutoRotatePeriod),
		}, nil
	}
}

// vaultExport is transit/export/{type}/{name}[/{version}]: every live
// version, or the one asked for ("latest" or a number).
func (s *Server) vaultExport(r *http.Request, k *kms.KMS, name string, _ *noBody) (any, error) {
	ki, err := k.Key(r.Context(), name)
	if err != nil {
		return nil, err
	}
	want := 0
	switch v := chi.URLParam(r, "version"); v {
	case "":
	case "latest":
		want = ki.Latest
	default:
		if want, err = strconv.Atoi(v); err != nil || want < 1 {
			return nil, invalid("version must be a positive integer or latest")
		}
	}
	keys := map[string]string{}
	for _, v := range ki.Versions {
		if want != 0 && v.Version != want || v.State == kms.StateDestroyed || v.Version < ki.MinDecryptionVersion {
			continue
		}
		resp, err := s.kmsExport(r, k, name, &KMSExportRequest{Version: v.Version})
		if err != nil {
			return nil, err
		}
		keys[strconv.Itoa(v.Version)] = resp.(KMSExportResponse).Key
	}
	return map[string]any{"name": name, "type": string(ki.Type), "keys": keys}, nil
}

// vaultCryptRequest is the body of encrypt, decrypt, rewrap, sign, verify
// and hmac, and vaultItem one of its batch items.
type vaultCryptRequest struct {
	vaultItem
	KeyVersion           vInt        `json:"key_version"`
	HashAlgorithm        string      `json:"hash_algorithm"`
	Algorithm            string      `json:"algorithm"` // hmac's name for it
	SignatureAlgorithm   string      `json:"signature_algorithm"`
	MarshalingAlgorithm  string      `json:"marshaling_algorithm"`
	Prehashed            vBool       `json:"prehashed"`
	BatchInput           []vaultItem `json:"batch_input"`
	PartialFailureStatus vInt        `json:"partial_failure_response_code"`
}

type vaultItem struct {
	Plaintext      string `json:"plaintext"`
	Ciphertext     string `json:"ciphertext"`
	Input          string `json:"input"`
	Signature      string `json:"signature"`
	HMAC           string `json:"hmac"`
	AssociatedData string `json:"associated_data"`
	Context        string `json:"context"`
	Reference      string `json:"reference"`
}

// vaultResult is one answer, or one batch item's.
type vaultResult struct {
	Ciphertext string `json:"ciphertext,omitempty"`
	Plaintext  string `json:"plaintext,omitempty"`
	Signature  string `json:"signature,omitempty"`
	HMAC       string `json:"hmac,omitempty"`
	Valid      *bool  `json:"valid,omitempty"`
	KeyVersion int    `json:"key_version,omitempty"`
	Reference  string `json:"reference,omitempty"`
	Error      string `json:"error,omitempty"`
}

// auditFields is v as encoding/json encodes and then decodes it (numbers
// as json.Number), for the audit log.
func (v vaultResult) auditFields() map[string]any {
	m := make(map[string]any, 2)
	for _, f := range [...]struct{ k, v string }{
		{"ciphertext", v.Ciphertext}, {"plaintext", v.Plaintext}, {"signature", v.Signature},
		{"hmac", v.HMAC}, {"reference", v.Reference}, {"error", v.Error},
	} {
		if f.v != "" {
			m[f.k] = f.v
		}
	}
	if v.Valid != nil {
		m["valid"] = *v.Valid
	}
	if v.KeyVersion != 0 {
		m["key_version"] = json.Number(strconv.Itoa(v.KeyVersion))
	}
	return m
}

// vaultCrypt serves one crypto operation: it turns the Vault request into
// the native one, runs the native handler and turns its answer back.
func (s *Server) vaultCrypt(op kms.BatchOp) func(r *http.Request, k *kms.KMS, name string, req *vaultCryptRequest) (any, error) {
	return func(r *http.Request, k *kms.KMS, name string, req *vaultCryptRequest) (any, error) {
		hmacVerify := op == kms.BatchVerify && (req.HMAC != "" || len(req.BatchInput) > 0 && req.BatchInput[0].HMAC != "")
		if hmacVerify {
			op = kms.BatchVerifyHMAC
		}
		jws := false
		switch req.MarshalingAlgorithm {
		case "", "asn1":
		case "jws":
			jws = true
		default:
			return nil, invalid(`marshaling_algorithm must be "asn1" or "jws"`)
		}
		var ecdsaSize int
		if jws {
			if ki, err := k.Key(r.Context(), name); err == nil {
				ecdsaSize = map[kms.KeyType]int{kms.TypeECDSAP256: 32, kms.TypeECDSAP384: 48}[ki.Type]
			}
		}
		hash := req.HashAlgorithm
		if op == kms.BatchHMAC || op == kms.BatchVerifyHMAC {
			hash = req.Algorithm
			if hash == "" {
				hash = req.HashAlgorithm
			}
		}
		if h := chi.URLParam(r, "hash"); h != "" {
			hash = h
		}
		opts := KMSSignOptions{Hash: hash, Prehashed: bool(req.Prehashed), SignatureAlgorithm: req.SignatureAlgorithm}
		items := req.BatchInput
		isBatch := items != nil
		if !isBatch {
			items = []vaultItem{req.vaultItem}
		} else if req.vaultItem != (vaultItem{}) {
			return nil, invalid("give either batch_input or a single item, not both")
		}
		pre := make([]error, len(items))
		for i := range items {
			if items[i].Context != "" {
				pre[i] = invalid("context: key derivation is not supported")
			}
			for _, f := range []*string{&items[i].Ciphertext, &items[i].Signature, &items[i].HMAC} {
				*f = fromVault(*f)
			}
			if jws && items[i].Signature != "" {
				sig, err := jwsToNative(items[i].Signature, ecdsaSize)
				if err != nil {
					pre[i] = err
				}
				items[i].Signature = sig
			}
		}
		if !isBatch && pre[0] != nil {
			return nil, pre[0]
		}
		var native any
		var err error
		version := int(req.KeyVersion)
		switch op {
		case kms.BatchEncrypt:
			nr := &KMSEncryptRequest{Version: version}
			nr.KMSEncryptItem, nr.BatchInput = nativeItems(items, isBatch, func(it vaultItem) KMSEncryptItem {
				return KMSEncryptItem{Plaintext: it.Plaintext, AssociatedData: it.AssociatedData}
			})
			native, err = s.kmsEncrypt(r, k, name, nr)
		case kms.BatchDecrypt, kms.BatchRewrap:
			nr := &KMSDecryptRequest{Version: version}
			nr.KMSDecryptItem, nr.BatchInput = nativeItems(items, isBatch, func(it vaultItem) KMSDecryptItem {
				return KMSDecryptItem{Ciphertext: it.Ciphertext, AssociatedData: it.AssociatedData}
			})
			native, err = s.kmsDecrypt(op)(r, k, name, nr)
		case kms.BatchSign, kms.BatchHMAC:
			nr := &KMSSignRequest{Version: version, KMSSignOptions: opts}
			nr.KMSSignItem, nr.BatchInput = nativeItems(items, isBatch, func(it vaultItem) KMSSignItem {
				return KMSSignItem{Input: it.Input}
			})
			native, err = s.kmsSign(op)(r, k, name, nr)
		default:
			nr := &KMSVerifyRequest{KMSSignOptions: opts}
			nr.KMSVerifyItem, nr.BatchInput = nativeItems(items, isBatch, func(it vaultItem) KMSVerifyItem {
				return KMSVerifyItem{Input: it.Input, Signature: it.Signature, HMAC: it.HMAC}
			})
			native, err = s.kmsVerify(op)(r, k, name, nr)
		}
		if err != nil {
			return nil, err
		}
		if one, ok := native.(KMSResult); ok { // a single item: native errors came back as err
			return toVaultResult(one, "", jws, ecdsaSize), nil
		}
		res := native.(KMSBatchResponse).BatchResults
		out := make([]vaultResult, len(res))
		failed, internal, succeeded := false, false, false
		for i, nr := range res {
			if pre[i] != nil {
				nr = KMSResult{Error: toError(pre[i])}
			}
			out[i] = toVaultResult(nr, items[i].Reference, jws, ecdsaSize)
			switch {
			case nr.Error == nil:
				succeeded = true
			case nr.Error.Code == CodeInternal:
				internal = true
			default:
				failed = true
			}
		}
		resp := &vaultResponse{Data: map[string]any{"batch_results": out}}
		switch { // as Vault: a user error 400, else an internal one 500
		case failed:
			resp.status = http.StatusBadRequest
		case internal:
			resp.status = http.StatusInternalServerError
		}
		if c := int(req.PartialFailureStatus); resp.status != 0 && succeeded && c >= 100 && c <= 599 {
			resp.status = c
		}
		return resp, nil
	}
}

// nativeItems converts the items of a Vault request into the native
// request's single item or, for a batch (even an empty one, which the
// native handler refuses as Vault does), its batch.
func nativeItems[T any](items []vaultItem, isBatch bool, conv func(vaultItem) T) (one T, batch []T) {
	if !isBatch {
		return conv(items[0]), nil
	}
	batch = make([]T, len(items))
	for i, it := range items {
		batch[i] = conv(it)
	}
	return one, batch
}

func toVaultResult(nr KMSResult, ref string, jws bool, ecdsaSize int) vaultResult {
	v := vaultResult{Ciphertext: toVault(nr.Ciphertext), Signature: toVault(nr.Signature), HMAC: toVault(nr.HMAC),
		Valid: nr.Valid, KeyVersion: nr.KeyVersion, Reference: ref}
	if nr.Plaintext != nil {
		v.Plaintext = *nr.Plaintext
	}
	if jws && v.Signature != "" {
		v.Signature = nativeToJWS(v.Signature, ecdsaSize)
	}
	if nr.Error != nil {
		v = vaultResult{Reference: ref, Error: nr.Error.Message}
	}
	return v
}

const (
	vaultPrefix  = "vault:v"
	custosPrefix = "custos:v"
)

// toVault and fromVault swap the prefix of a ciphertext, signature or HMAC.
func toVault(s string) string {
	if rest, ok := strings.CutPrefix(s, custosPrefix); ok {
		return vaultPrefix + rest
	}
	return s
}

func fromVault(s string) string {
	if rest, ok := strings.CutPrefix(s, vaultPrefix); ok {
		return custosPrefix + rest
	}
	return s
}

// splitSig splits "vault:vN:body" into its header "vault:vN:" and body.
func splitSig(s string) (string, string, bool) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", "", false
	}
	j := strings.IndexByte(s[i+1:], ':')
	if j < 0 {
		return "", "", false
	}
	return s[:i+j+2], s[i+j+2:], true
}

type ecdsaSig struct{ R, S *big.Int }

// nativeToJWS re-encodes a signature's body as JWS does: base64url without
// padding and, for ECDSA, r || s rather than ASN.1.
func nativeToJWS(sig string, ecdsaSize int) string {
	head, body, ok := splitSig(sig)
	raw, err := base64.StdEncoding.DecodeString(body)
	if !ok || err != nil {
		return sig
	}
	if ecdsaSize > 0 {
		var es ecdsaSig
		if _, err := asn1.Unmarshal(raw, &es); err != nil {
			return sig
		}
		raw = make([]byte, 2*ecdsaSize)
		es.R.FillBytes(raw[:ecdsaSize])
		es.S.FillBytes(raw[ecdsaSize:])
	}
	return head + base64.RawURLEncoding.EncodeToString(raw)
}

var errJWS = invalid("signature is not a JWS-marshaled signature")

// jwsToNative undoes nativeToJWS.
func jwsToNative(sig string, ecdsaSize int) (string, error) {
	head, body, ok := splitSig(sig)
	if !ok {
		return "", errJWS
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(body, "="))
	if err != nil {
		return "", errJWS
	}
	if ecdsaSize > 0 {
		if len(raw) != 2*ecdsaSize {
			return "", errJWS
		}
		der, err := asn1.Marshal(ecdsaSig{new(big.Int).SetBytes(raw[:ecdsaSize]), new(big.Int).SetBytes(raw[ecdsaSize:])})
		if err != nil {
			return "", errors.Join(errJWS, err)
		}
		raw = der
	}
	return head + base64.StdEncoding.EncodeToString(raw), nil
}

// vaultDataKeyRequest is transit/datakey/{plaintext|wrapped}/{name}.
type vaultDataKeyRequest struct {
	Bits       vInt   `json:"bits"`
	KeyVersion vInt   `json:"key_version"`
	Context    string `json:"context"`
}

func (s *Server) vaultDataKey(r *http.Request, k *kms.KMS, name string, req *vaultDataKeyRequest) (any, error) {
	kind := chi.URLParam(r, "plaintext")
	if kind != "plaintext" && kind != "wrapped" {
		return nil, invalid(`the data key type must be "plaintext" or "wrapped"`)
	}
	if req.Context != "" {
		return nil, invalid("context: key derivation is not supported")
	}
	resp, err := s.kmsDataKey(r, k, name, &KMSDataKeyRequest{Bits: int(req.Bits), Plaintext: kind == "plaintext", Version: int(req.KeyVersion)})
	if err != nil {
		return nil, err
	}
	return toVaultResult(resp.(KMSResult), "", false, 0), nil
}

// vaultRandomRequest is transit/random[/{source}][/{bytes}][/{format}].
type vaultRandomRequest struct {
	Bytes  vInt   `json:"bytes"`
	Format string `json:"format"`
	Source string `json:"source"`
}

func (s *Server) vaultRandom(r *http.Request, k *kms.KMS, _ string, req *vaultRandomRequest) (any, error) {
	for _, p := range []string{chi.URLParam(r, "a"), chi.URLParam(r, "b")} {
		switch n, err := strconv.Atoi(p); {
		case p == "":
		case err == nil:
			req.Bytes = vInt(n)
		case p == "hex" || p == "base64":
			req.Format = p
		}
	}
	resp, err := s.kmsRandom(r, k, "", &KMSRandomRequest{Bytes: int(req.Bytes), Format: req.Format})
	if err != nil {
		return nil, err
	}
	return map[string]string{"random_bytes": resp.(KMSRandomResponse).Random}, nil
}
