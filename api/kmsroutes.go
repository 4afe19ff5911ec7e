package api

import (
	"cmp"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/kms"
	"github.com/go-chi/chi/v5"
)

// The kms endpoints. Binary values (plaintexts, associated data, inputs,
// keys) travel in standard padded base64; ciphertexts, signatures and HMACs
// in their text form "custos:v<version>:<base64>". Key names starting with
// '_' belong to the node (its cluster CA key): every route answers for them
// as for a key that does not exist, and none can be created.
func (s *Server) kmsRoutes() []route {
	get, post, del := http.MethodGet, http.MethodPost, http.MethodDelete
	return []route{
		{method: get, pattern: "/v1/kms/keys", cap: auth.CapList, op: "kms-key-list", h: handle(withKMS(s, noName, s.kmsKeyList))},
		{method: post, pattern: "/v1/kms/keys/{name}", cap: auth.CapCreate, op: "kms-key-create", h: handle(withKMS(s, newKeyName, s.kmsKeyCreate))},
		{method: get, pattern: "/v1/kms/keys/{name}", cap: auth.CapRead, op: "kms-key-read", h: handle(withKMS(s, keyName, s.kmsKeyRead))},
		{method: del, pattern: "/v1/kms/keys/{name}", cap: auth.CapDelete, op: "kms-key-delete", h: handle(withKMS(s, keyName, s.kmsKeyDelete))},
		{method: post, pattern: "/v1/kms/keys/{name}/rotate", cap: auth.CapUpdate, op: "kms-key-rotate", h: handle(withKMS(s, keyName, s.kmsKeyRotate))},
		{method: post, pattern: "/v1/kms/keys/{name}/config", cap: auth.CapUpdate, op: "kms-key-config", h: handle(withKMS(s, keyName, s.kmsKeyConfig))},
		{method: post, pattern: "/v1/kms/keys/{name}/versions/{version}", cap: auth.CapUpdate, op: "kms-key-version", h: handle(withKMS(s, keyName, s.kmsKeyVersion))},
		{method: get, pattern: "/v1/kms/keys/{name}/public", cap: auth.CapRead, op: "kms-public-key", h: handle(withKMS(s, keyName, s.kmsPublicKey))},
		{method: post, pattern: "/v1/kms/export/{name}", cap: auth.CapRead | auth.CapSudo, op: "kms-export", h: handle(withKMS(s, keyName, s.kmsExport))},
		{method: post, pattern: "/v1/kms/encrypt/{name}", cap: auth.CapUpdate, op: "kms-encrypt", h: handle(withKMS(s, keyName, s.kmsEncrypt))},
		{method: post, pattern: "/v1/kms/decrypt/{name}", cap: auth.CapUpdate, op: "kms-decrypt", h: handle(withKMS(s, keyName, s.kmsDecrypt(kms.BatchDecrypt)))},
		{method: post, pattern: "/v1/kms/rewrap/{name}", cap: auth.CapUpdate, op: "kms-rewrap", h: handle(withKMS(s, keyName, s.kmsDecrypt(kms.BatchRewrap)))},
		{method: post, pattern: "/v1/kms/datakey/{name}", cap: auth.CapUpdate, op: "kms-datakey", h: handle(withKMS(s, keyName, s.kmsDataKey))},
		{method: post, pattern: "/v1/kms/sign/{name}", cap: auth.CapUpdate, op: "kms-sign", h: handle(withKMS(s, keyName, s.kmsSign(kms.BatchSign)))},
		{method: post, pattern: "/v1/kms/verify/{name}", cap: auth.CapUpdate, op: "kms-verify", h: handle(withKMS(s, keyName, s.kmsVerify(kms.BatchVerify)))},
		{method: post, pattern: "/v1/kms/hmac/{name}", cap: auth.CapUpdate, op: "kms-hmac", h: handle(withKMS(s, keyName, s.kmsSign(kms.BatchHMAC)))},
		{method: post, pattern: "/v1/kms/verify-hmac/{name}", cap: auth.CapUpdate, op: "kms-verify-hmac", h: handle(withKMS(s, keyName, s.kmsVerify(kms.BatchVerifyHMAC)))},
		{method: post, pattern: "/v1/kms/random", cap: auth.CapUpdate, op: "kms-random", h: handle(withKMS(s, noName, s.kmsRandom))},
	}
}

// The kms API's request and response bodies.
type (
	// KMSKeyCreateRequest is POST /v1/kms/keys/{name}.
	KMSKeyCreateRequest struct {
		Type             string `json:"type"` // kms.DefaultKeyType when empty
		Exportable       bool   `json:"exportable"`
		DeletionAllowed  bool   `json:"deletion_allowed"`
		AutoRotatePeriod string `json:"auto_rotate_period"` // Go duration; empty: never
		AutoRotateUses   uint64 `json:"auto_rotate_uses"`
	}
	// KMSKeyConfigRequest is POST /v1/kms/keys/{name}/config; absent fields stay.
	KMSKeyConfigRequest struct {
		MinDecryptionVersion *int    `json:"min_decryption_version"`
		MinEncryptionVersion *int    `json:"min_encryption_version"`
		Exportable           *bool   `json:"exportable"`
		DeletionAllowed      *bool   `json:"deletion_allowed"`
		AutoRotatePeriod     *string `json:"auto_rotate_period"`
		AutoRotateUses       *uint64 `json:"auto_rotate_uses"`
	}
	// KMSVersionStateRequest is POST /v1/kms/keys/{name}/versions/{version}.
	KMSVersionStateRequest struct {
		State kms.VersionState `json:"state"` // active, disabled or destroyed
	}
	// KMSKey is a key's metadata: the answer of the key management calls.
	KMSKey struct {
		Name                 string          `json:"name"`
		Type                 kms.KeyType     `json:"type"`
		Created              time.Time       `json:"created"`
		LatestVersion        int             `json:"latest_version"`
		MinDecryptionVersion int             `json:"min_decryption_version"`
		MinEncryptionVersion int             `json:"min_encryption_version"`
		Exportable           bool            `json:"exportable"`
		DeletionAllowed      bool            `json:"deletion_allowed"`
		DeletionDate         time.Time       `json:"deletion_date,omitzero"`
		AutoRotatePeriod     string          `json:"auto_rotate_period"`
		AutoRotateUses       uint64          `json:"auto_rotate_uses"`
		Versions             []KMSKeyVersion `json:"versions"`
	}
	// KMSKeyVersion describes one version of a key and how often it was used.
	KMSKeyVersion struct {
		Version     int              `json:"version"`
		Created     time.Time        `json:"created"`
		State       kms.VersionState `json:"state"`
		Uses        uint64           `json:"uses"`
		Decryptions uint64           `json:"decryptions"`
	}
	// KMSPublicKeyResponse answers GET /v1/kms/keys/{name}/public?version=N.
	KMSPublicKeyResponse struct {
		Name      string      `json:"name"`
		Type      kms.KeyType `json:"type"`
		Version   int         `json:"version"`
		PublicKey string      `json:"public_key"` // PEM, PKIX
	}
	// KMSExportRequest is POST /v1/kms/export/{name}; version 0 is the latest.
	KMSExportRequest struct {
		Version int `json:"version"`
	}
	// KMSExportResponse carries key material: raw for symmetric types, else PKCS#8 DER.
	KMSExportResponse struct {
		Name    string      `json:"name"`
		Type    kms.KeyType `json:"type"`
		Version int         `json:"version"`
		Key     string      `json:"key"`
	}

	// KMSEncryptItem is one plaintext to encrypt.
	KMSEncryptItem struct {
		Plaintext      string `json:"plaintext"`
		AssociatedData string `json:"associated_data,omitempty"`
	}
	// KMSEncryptRequest is POST /v1/kms/encrypt/{name}.
	KMSEncryptRequest struct {
		KMSEncryptItem
		Version    int              `json:"version,omitempty"`
		BatchInput []KMSEncryptItem `json:"batch_input,omitempty"`
	}
	// KMSDecryptItem is one ciphertext to decrypt or rewrap.
	KMSDecryptItem struct {
		Ciphertext     string `json:"ciphertext"`
		AssociatedData string `json:"associated_data,omitempty"`
	}
	// KMSDecryptRequest is POST /v1/kms/decrypt/{name} and .../rewrap/{name};
	// Version is rewrap's: the version that encrypts again (0: the latest).
	KMSDecryptRequest struct {
		KMSDecryptItem
		Version    int              `json:"version,omitempty"`
		BatchInput []KMSDecryptItem `json:"batch_input,omitempty"`
	}
	// KMSDataKeyRequest is POST /v1/kms/datakey/{name}.
	KMSDataKeyRequest struct {
		Bits           int    `json:"bits"`      // 128, 256 (default) or 512
		Plaintext      bool   `json:"plaintext"` // return the key in the clear too
		AssociatedData string `json:"associated_data,omitempty"`
		Version        int    `json:"version,omitempty"`
	}
	// KMSSignItem is one message to sign or MAC.
	KMSSignItem struct {
		Input string `json:"input"`
	}
	// KMSSignOptions: Hash is sha2-256, sha2-384, sha2-512, none (ed25519's
	// pure mode), or empty for the key type's default; SignatureAlgorithm is
	// the RSA scheme, pss (default) or pkcs1v15. HMACs take a hash only.
	KMSSignOptions struct {
		Hash               string `json:"hash,omitempty"`
		Prehashed          bool   `json:"prehashed,omitempty"`
		SignatureAlgorithm string `json:"signature_algorithm,omitempty"`
	}
	// KMSSignRequest is POST /v1/kms/sign/{name} and /v1/kms/hmac/{name}.
	KMSSignRequest struct {
		KMSSignItem
		KMSSignOptions
		Version    int           `json:"version,omitempty"`
		BatchInput []KMSSignItem `json:"batch_input,omitempty"`
	}
	// KMSVerifyItem is a message and its signature (verify) or HMAC (verify-hmac).
	KMSVerifyItem struct {
		Input     string `json:"input"`
		Signature string `json:"signature,omitempty"`
		HMAC      string `json:"hmac,omitempty"`
	}
	// KMSVerifyRequest is POST /v1/kms/verify/{name} and .../verify-hmac/{name}.
	KMSVerifyRequest struct {
		KMSVerifyItem
		KMSSignOptions
		BatchInput []KMSVerifyItem `json:"batch_input,omitempty"`
	}
	// KMSResult answers one operation or batch item (which alone may carry
	// an error); KeyVersion is the version that encrypted, signed or MACed.
	KMSResult struct {
		Ciphertext string  `json:"ciphertext,omitempty"`
		Plaintext  *string `json:"plaintext,omitempty"`
		Signature  string  `json:"signature,omitempty"`
		HMAC       string  `json:"hmac,omitempty"`
		Valid      *bool   `json:"valid,omitempty"`
		KeyVersion int     `json:"key_version,omitempty"`
		Error      *Error  `json:"error,omitempty"`
	}
	// KMSBatchResponse answers a request with batch_input: one result per
	// item, in order; its status is 200 even when items failed.
	KMSBatchResponse struct {
		BatchResults []KMSResult `json:"batch_results"`
	}
	// KMSRandomRequest is POST /v1/kms/random.
	KMSRandomRequest struct {
		Bytes  int    `json:"bytes"`  // 1 to kms.MaxRandomBytes; 0 means 32
		Format string `json:"format"` // base64 (default) or hex
	}
	// KMSRandomResponse carries the random bytes.
	KMSRandomResponse struct {
		Random string `json:"random"`
	}
)

// keyName returns the key named in the URL. Reserved names answer as
// absent keys.
func keyName(r *http.Request) (string, error) {
	name := chi.URLParam(r, "name")
	if reserved(name) {
		return "", fmt.Errorf("%w: key %q", kms.ErrNotFound, name)
	}
	return name, nil
}

// newKeyName returns the name of a key to create; reserved names are invalid.
func newKeyName(r *http.Request) (string, error) {
	name, err := keyName(r)
	if errors.Is(err, kms.ErrNotFound) {
		return "", invalid("key names starting with '_' are reserved for the system")
	}
	return name, err
}

func reserved(name string) bool { return strings.HasPrefix(name, "_") }

func noName(*http.Request) (string, error) { return "", nil }

// keyResult turns the answer of a key management call into the response.
func keyResult(ki kms.KeyInfo, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	out := KMSKey{
		Name: ki.Name, Type: ki.Type, Created: ki.Created, LatestVersion: ki.Latest,
		MinDecryptionVersion: ki.MinDecryptionVersion, MinEncryptionVersion: ki.MinEncryptionVersion,
		Exportable: ki.Exportable, DeletionAllowed: ki.DeletionAllowed, DeletionDate: ki.DeletionDate,
		AutoRotatePeriod: ki.AutoRotatePeriod.String(), AutoRotateUses: ki.AutoRotateUses,
		Versions: make([]KMSKeyVersion, 0, len(ki.Versions)),
	}
	for _, v := range ki.Versions {
		out.Versions = append(out.Versions, KMSKeyVersion(v))
	}
	return out, nil
}

func (s *Server) kmsKeyList(r *http.Request, k *kms.KMS, _ string, _ *struct{}) (any, error) {
	names, err := k.ListKeys(r.Context())
	if err != nil {
		return nil, err
	}
	return ListResponse{Keys: append([]string{}, slices.DeleteFunc(names, reserved)...)}, nil
}

func (s *Server) kmsKeyCreate(r *http.Request, k *kms.KMS, name string, req *KMSKeyCreateRequest) (any, error) {
	period, err := duration("auto_rotate_period", req.AutoRotatePeriod)
	if err != nil {
		return nil, err
	}
	return keyResult(k.CreateKey(r.Context(), name, kms.KeyOptions{
		Type: kms.KeyType(req.Type), Exportable: req.Exportable, DeletionAllowed: req.DeletionAllowed,
		AutoRotatePeriod: period, AutoRotateUses: req.AutoRotateUses,
	}))
}

func (s *Server) kmsKeyRead(r *http.Request, k *kms.KMS, name string, _ *struct{}) (any, error) {
	return keyResult(k.Key(r.Context(), name))
}

func (s *Server) kmsKeyRotate(r *http.Request, k *kms.KMS, name string, _ *struct{}) (any, error) {
	return keyResult(k.RotateKey(r.Context(), name))
}

func (s *Server) kmsKeyConfig(r *http.Request, k *kms.KMS, name string, req *KMSKeyConfigRequest) (any, error) {
	u := kms.KeyUpdate{
		MinDecryptionVersion: req.MinDecryptionVersion, MinEncryptionVersion: req.MinEncryptionVersion,
		Exportable: req.Exportable, DeletionAllowed: req.DeletionAllowed, AutoRotateUses: req.AutoRotateUses,
	}
	if req.AutoRotatePeriod != nil {
		d, err := duration("auto_rotate_period", *req.AutoRotatePeriod)
		if err != nil {
			return nil, err
		}
		u.AutoRotatePeriod = &d
	}
	return keyResult(k.UpdateKey(r.Context(), name, u))
}

func (s *Server) kmsKeyVersion(r *http.Request, k *kms.KMS, name string, req *KMSVersionStateRequest) (any, error) {
	n, err := strconv.Atoi(chi.URLParam(r, "version"))
	if err != nil {
		return nil, invalid("the version in the path must be an integer")
	}
	return keyResult(k.SetVersionState(r.Context(), name, n, req.State))
}

func (s *Server) kmsKeyDelete(r *http.Request, k *kms.KMS, name string, _ *struct{}) (any, error) {
	wait, err := duration("wait", r.URL.Query().Get("wait"))
	if err == nil {
		_, err = k.ScheduleDeletion(r.Context(), name, wait)
	}
	if err != nil {
		return nil, err
	}
	return keyResult(k.Key(r.Context(), name)) // with its deletion_date
}

func (s *Server) kmsPublicKey(r *http.Request, k *kms.KMS, name string, _ *struct{}) (any, error) {
	ki, err := k.Key(r.Context(), name)
	if err != nil {
		return nil, err
	}
	n := ki.Latest // named, so that the answer can say which version it is
	if q := r.URL.Query().Get("version"); q != "" {
		if n, err = strconv.Atoi(q); err != nil {
			return nil, invalid("version must be an integer")
		}
	}
	pub, err := k.PublicKey(r.Context(), name, n)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("public key of %q: %v", name, err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return KMSPublicKeyResponse{Name: name, Type: ki.Type, Version: n, PublicKey: string(p)}, nil
}

func (s *Server) kmsExport(r *http.Request, k *kms.KMS, name string, req *KMSExportRequest) (any, error) {
	x, err := k.Export(r.Context(), name, req.Version)
	if err != nil {
		return nil, err
	}
	defer clear(x.Key)
	return KMSExportResponse{Name: name, Type: x.Type, Version: x.Version, Key: base64.StdEncoding.EncodeToString(x.Key)}, nil
}

func (s *Server) kmsEncrypt(r *http.Request, k *kms.KMS, name string, req *KMSEncryptRequest) (any, error) {
	o := kms.BatchItem{Crypt: kms.CryptOptions{Version: req.Version}}
	return serveCrypto(s, r, k, name, kms.BatchEncrypt, o, req.KMSEncryptItem, req.BatchInput)
}

// kmsDecrypt serves decrypt and rewrap.
func (s *Server) kmsDecrypt(op kms.BatchOp) func(*http.Request, *kms.KMS, string, *KMSDecryptRequest) (any, error) {
	return func(r *http.Request, k *kms.KMS, name string, req *KMSDecryptRequest) (any, error) {
		o := kms.BatchItem{Crypt: kms.CryptOptions{Version: req.Version}}
		return serveCrypto(s, r, k, name, op, o, req.KMSDecryptItem, req.BatchInput)
	}
}

func (s *Server) kmsDataKey(r *http.Request, k *kms.KMS, name string, req *KMSDataKeyRequest) (any, error) {
	ad, err := b64("associated_data", req.AssociatedData)
	if err != nil {
		return nil, err
	}
	dk, err := k.GenerateDataKey(r.Context(), name, req.Bits, req.Plaintext, kms.CryptOptions{AD: ad, Version: req.Version})
	if err != nil {
		return nil, err
	}
	res, err := cryptoResult(kms.BatchEncrypt, kms.BatchResult{Output: dk.Ciphertext})
	if dk.Plaintext != nil {
		pt := base64.StdEncoding.EncodeToString(dk.Plaintext)
		clear(dk.Plaintext)
		res.Plaintext = &pt
	}
	return res, err
}

// kmsSign serves sign and hmac.
func (s *Server) kmsSign(op kms.BatchOp) func(*http.Request, *kms.KMS, string, *KMSSignRequest) (any, error) {
	return func(r *http.Request, k *kms.KMS, name string, req *KMSSignRequest) (any, error) {
		o, err := signOptions(r, k, name, req.KMSSignOptions)
		if err != nil {
			return nil, err
		}
		o.Version = req.Version
		return serveCrypto(s, r, k, name, op, kms.BatchItem{Sign: o}, req.KMSSignItem, req.BatchInput)
	}
}

// kmsVerify serves verify and verify-hmac.
func (s *Server) kmsVerify(op kms.BatchOp) func(*http.Request, *kms.KMS, string, *KMSVerifyRequest) (any, error) {
	return func(r *http.Request, k *kms.KMS, name string, req *KMSVerifyRequest) (any, error) {
		o, err := signOptions(r, k, name, req.KMSSignOptions)
		if err != nil {
			return nil, err
		}
		return serveCrypto(s, r, k, name, op, kms.BatchItem{Sign: o}, req.KMSVerifyItem, req.BatchInput)
	}
}

func (s *Server) kmsRandom(_ *http.Request, k *kms.KMS, _ string, req *KMSRandomRequest) (any, error) {
	enc := map[string]func([]byte) string{"": base64.StdEncoding.EncodeToString, "base64": base64.StdEncoding.EncodeToString, "hex": hex.EncodeToString}[req.Format]
	if enc == nil {
		return nil, invalid(`format must be "base64" or "hex"`)
	}
	b, err := k.Random(cmp.Or(req.Bytes, 32))
	if err != nil {
		return nil, err
	}
	return KMSRandomResponse{Random: enc(b)}, nil
}

// cryptoItem is an item of a crypto request. item makes it a kms.BatchItem
// for op, without the request's options; field prefixes the names of the
// fields it complains about.
type cryptoItem interface {
	comparable
	item(field string, op kms.BatchOp) (kms.BatchItem, error)
}

func (it KMSEncryptItem) item(f string, _ kms.BatchOp) (kms.BatchItem, error) {
	pt, err := b64(f+"plaintext", it.Plaintext)
	if err != nil {
		return kms.BatchItem{}, err
	}
	ad, err := b64(f+"associated_data", it.AssociatedData)
	return kms.BatchItem{Input: pt, Crypt: kms.CryptOptions{AD: ad}}, err
}

func (it KMSDecryptItem) item(f string, _ kms.BatchOp) (kms.BatchItem, error) {
	ad, err := b64(f+"associated_data", it.AssociatedData)
	return kms.BatchItem{Input: []byte(it.Ciphertext), Crypt: kms.CryptOptions{AD: ad}}, err
}

func (it KMSSignItem) item(f string, _ kms.BatchOp) (kms.BatchItem, error) {
	in, err := b64(f+"input", it.Input)
	return kms.BatchItem{Input: in}, err
}

func (it KMSVerifyItem) item(f string, op kms.BatchOp) (kms.BatchItem, error) {
	sig, other := it.Signature, it.HMAC
	if op == kms.BatchVerifyHMAC {
		sig, other = it.HMAC, it.Signature
	}
	if other != "" {
		return kms.BatchItem{}, invalid("%sgive a signature to verify and an hmac to verify-hmac", f)
	}
	in, err := b64(f+"input", it.Input)
	return kms.BatchItem{Input: in, Signature: []byte(sig)}, err
}

// serveCrypto runs op, with the version and sign options of opts, over the
// request's single item or over each item of its batch. In a batch every
// item fails alone, with an error coded as toError codes a request's; an
// item whose fields do not decode is not sent to the kms.
func serveCrypto[T cryptoItem](s *Server, r *http.Request, k *kms.KMS, name string, op kms.BatchOp, opts kms.BatchItem, single T, batch []T) (any, error) {
	var zero T
	isBatch := batch != nil
	switch {
	case !isBatch:
		it, err := single.item("", op)
		if err != nil {
			return nil, err
		}
		it.Crypt.Version, it.Sign = opts.Crypt.Version, opts.Sign
		rr := k.One(r.Context(), name, op, it)
		if rr.Err != nil {
			return nil, rr.Err
		}
		return cryptoResult(op, rr)
	case single != zero:
		return nil, invalid("give either batch_input or a single item, not both")
	case len(batch) == 0:
		return nil, invalid("batch_input is empty")
	}
	out, errs := make([]KMSResult, len(batch)), make([]error, len(batch))
	var items []kms.BatchItem
	var index []int // items[j] is batch[index[j]]
	for i, x := range batch {
		it, err := x.item(fmt.Sprintf("batch_input[%d].", i), op)
		if err != nil {
			errs[i] = err
			continue
		}
		it.Crypt.Version, it.Sign = opts.Crypt.Version, opts.Sign
		items, index = append(items, it), append(index, i)
	}
	res, err := k.Batch(r.Context(), name, op, items)
	if err != nil {
		return nil, err
	}
	for j, rr := range res {
		if errs[index[j]] = rr.Err; rr.Err == nil {
			out[index[j]], errs[index[j]] = cryptoResult(op, rr)
		}
	}
	for i, err := range errs {
		if err != nil {
			out[i] = KMSResult{Error: s.itemError(r, err)}
		}
	}
	return KMSBatchResponse{BatchResults: out}, nil
}

// itemError is the error of one batch item.
func (s *Server) itemError(r *http.Request, err error) *Error {
	e := toError(err)
	if e.Code == CodeInternal {
		s.log.Error("internal error in a batch item", "request_id", requestID(r.Context()), "path", r.URL.Path, "error", err)
	}
	return e
}

// cryptoResult turns the output of op into its answer.
func cryptoResult(op kms.BatchOp, res kms.BatchResult) (KMSResult, error) {
	switch op {
	case kms.BatchDecrypt:
		pt := base64.StdEncoding.EncodeToString(res.Output)
		clear(res.Output)
		return KMSResult{Plaintext: &pt}, nil
	case kms.BatchVerify, kms.BatchVerifyHMAC:
		return KMSResult{Valid: &res.Valid}, nil
	}
	text, err := kms.FormatCiphertext(res.Output)
	if err != nil { // %v: the kms broke its promise; not the caller's mistake
		return KMSResult{}, fmt.Errorf("kms output is not self-describing: %v", err)
	}
	v, _, _ := kms.ParseCiphertext(res.Output)
	switch op {
	case kms.BatchSign:
		return KMSResult{Signature: text, KeyVersion: v}, nil
	case kms.BatchHMAC:
		return KMSResult{HMAC: text, KeyVersion: v}, nil
	}
	return KMSResult{Ciphertext: text, KeyVersion: v}, nil
}

// b64 decodes a base64 field; the error names the field, never its value.
func b64(field, v string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil {
		return nil, invalid("%s is not valid base64", field)
	}
	return b, nil
}

var kmsHashes = map[string]crypto.Hash{"sha2-256": crypto.SHA256, "sha2-384": crypto.SHA384, "sha2-512": crypto.SHA512}

// signOptions reads the options of sign and verify. The kms takes hash 0
// as the key type's default, which is no hash for ed25519 only; so "none"
// looks the key up, to refuse it for other types rather than quietly hash
// with their default.
func signOptions(r *http.Request, k *kms.KMS, name string, o KMSSignOptions) (kms.SignOptions, error) {
	so := kms.SignOptions{Prehashed: o.Prehashed, Padding: kms.PaddingPSS}
	switch o.SignatureAlgorithm {
	case "", "pss":
	case "pkcs1v15":
		so.Padding = kms.PaddingPKCS1v15
	default:
		return so, invalid(`signature_algorithm must be "pss" or "pkcs1v15"`)
	}
	switch h, ok := kmsHashes[o.Hash]; {
	case ok:
		so.Hash = h
	case o.Hash == "none":
		ki, err := k.Key(r.Context(), name)
		if err != nil {
			return so, err
		}
		if ki.Type != kms.TypeEd25519 {
			return so, invalid(`hash "none" is for ed25519 keys; a %s key signs a digest`, ki.Type)
		}
	case o.Hash != "":
		return so, invalid("hash must be sha2-256, sha2-384, sha2-512 or none")
	}
	return so, nil
}
