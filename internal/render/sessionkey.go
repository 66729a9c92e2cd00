package render

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// SessionKeySize is the AES-256-GCM key length.
const SessionKeySize = 32

// GeneratesSessionKey says whether the operator must generate va's session key.
func GeneratesSessionKey(va *v1alpha1.VoiceAgent) bool {
	enc := va.Spec.Encryption
	return enc == nil || enc.AtRest == nil || enc.AtRest.KeyFrom == nil
}

// SessionKeySecret wraps a freshly generated key. The operator creates it once and
// never reads it back; it is immutable so that nobody swaps the key under the agent.
func SessionKeySecret(va *v1alpha1.VoiceAgent, key []byte) *corev1.Secret {
	immutable := true
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(va, SessionKeySecretName(va)),
		Type:       corev1.SecretTypeOpaque,
		Immutable:  &immutable,
		Data:       map[string][]byte{"key": key},
	}
}
