package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Signature algorithms of checkpoints.
const (
	AlgHMAC    = "HMAC-SHA256"
	AlgEd25519 = "Ed25519"
	AlgNone    = "none"
)

// Signer signs checkpoints. Implementations re-read their key file when it changes.
type Signer interface {
	Alg() string
	Sign(msg []byte) ([]byte, error)
}

// secretFile serves a credential from a mounted file and re-reads it when the file
// changes (Kubernetes swaps a symlink on rotation, which changes what Stat reports).
// Errors name the file, never its content.
type secretFile struct {
	path string
	trim bool

	mu      sync.Mutex
	value   []byte
	modTime time.Time
	size    int64
	parsed  any // what parse made of value, cached with it
}

func newSecretFile(path string, trim bool) *secretFile {
	return &secretFile{path: path, trim: trim}
}

// get returns the current content, parsed by parse (cached until the file changes).
func (s *secretFile) get(parse func([]byte) (any, error)) (any, error) {
	st, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: not found or not readable", s.path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.value != nil && st.ModTime().Equal(s.modTime) && st.Size() == s.size {
		return s.parsed, nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: unreadable", s.path)
	}
	if s.trim {
		data = bytes.TrimSpace(data)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("key file %s is empty", s.path)
	}
	v, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", s.path, err)
	}
	s.value, s.modTime, s.size, s.parsed = data, st.ModTime(), st.Size(), v
	return v, nil
}

func (s *secretFile) bytes() ([]byte, error) {
	v, err := s.get(func(b []byte) (any, error) { return b, nil })
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

type hmacSigner struct{ key *secretFile }

// NewHMACSigner signs with HMAC-SHA256 keyed by the file's trimmed content.
func NewHMACSigner(keyFile string) Signer { return &hmacSigner{key: newSecretFile(keyFile, true)} }

func (s *hmacSigner) Alg() string { return AlgHMAC }

func (s *hmacSigner) Sign(msg []byte) ([]byte, error) {
	key, err := s.key.bytes()
	if err != nil {
		return nil, err
	}
	return hmacSHA256(key, msg), nil
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

type ed25519Signer struct{ key *secretFile }

// NewEd25519Signer signs with the Ed25519 private key in keyFile (PEM PKCS #8, or 32
// or 64 raw bytes).
func NewEd25519Signer(keyFile string) Signer {
	return &ed25519Signer{key: newSecretFile(keyFile, false)}
}

func (s *ed25519Signer) Alg() string { return AlgEd25519 }

func (s *ed25519Signer) Sign(msg []byte) ([]byte, error) {
	k, err := s.key.get(func(b []byte) (any, error) { return ParseEd25519PrivateKey(b) })
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(k.(ed25519.PrivateKey), msg), nil
}

// NewSigner builds the signer for a key type ("HMAC-SHA256" or "Ed25519") and file;
// an empty file means no signer.
func NewSigner(keyType, keyFile string) (Signer, error) {
	if keyFile == "" {
		return nil, nil
	}
	var s Signer
	switch keyType {
	case AlgHMAC, "":
		s = NewHMACSigner(keyFile)
	case AlgEd25519:
		s = NewEd25519Signer(keyFile)
	default:
		return nil, fmt.Errorf("checkpoint key type %q: want %s or %s", keyType, AlgHMAC, AlgEd25519)
	}
	if _, err := s.Sign([]byte("probe")); err != nil {
		return nil, err
	}
	return s, nil
}

// ParseEd25519PrivateKey reads PEM "PRIVATE KEY" (PKCS #8) or 32/64 raw bytes.
func ParseEd25519PrivateKey(data []byte) (ed25519.PrivateKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("not a PKCS #8 private key")
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, errors.New("not an Ed25519 private key")
		}
		return ek, nil
	}
	switch len(data) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(data), nil
	case ed25519.PrivateKeySize:
		k := ed25519.PrivateKey(bytes.Clone(data))
		if !bytes.Equal(k.Public().(ed25519.PublicKey), data[32:]) {
			return nil, errors.New("raw Ed25519 key: public half does not match the seed")
		}
		return k, nil
	}
	return nil, errors.New("want PEM PRIVATE KEY, or 32 or 64 raw bytes")
}

// ParseEd25519PublicKey reads PEM "PUBLIC KEY" (PKIX) or 32 raw bytes.
func ParseEd25519PublicKey(data []byte) (ed25519.PublicKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, errors.New("not a PKIX public key")
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, errors.New("not an Ed25519 public key")
		}
		return ek, nil
	}
	if len(data) == ed25519.PublicKeySize {
		return ed25519.PublicKey(bytes.Clone(data)), nil
	}
	return nil, errors.New("want PEM PUBLIC KEY or 32 raw bytes")
}

// checkSignature checks a checkpoint's signature against the verifier's key.
func checkSignature(opts *VerifyOptions, cp *Checkpoint, msg []byte) error {
	sig, err := hex.DecodeString(cp.Sig)
	if err != nil {
		return errors.New("signature is not hex")
	}
	switch {
	case opts.HMACKey != nil:
		if cp.Alg != AlgHMAC {
			return fmt.Errorf("checkpoint is %q, want %s", cp.Alg, AlgHMAC)
		}
		if !hmac.Equal(sig, hmacSHA256(opts.HMACKey, msg)) {
			return errors.New("HMAC does not match: signed with another key, or forged")
		}
	case opts.Ed25519PublicKey != nil:
		if cp.Alg != AlgEd25519 {
			return fmt.Errorf("checkpoint is %q, want %s", cp.Alg, AlgEd25519)
		}
		if !ed25519.Verify(opts.Ed25519PublicKey, msg, sig) {
			return errors.New("Ed25519 signature does not verify: signed with another key, or forged")
		}
	}
	return nil
}

// ReadHMACKeyFile reads an HMAC key the way the signer does: the file's content with
// surrounding white space removed.
func ReadHMACKeyFile(path string) ([]byte, error) {
	return newSecretFile(path, true).bytes()
}
