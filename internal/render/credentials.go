package render

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// Credential is one credential a VoiceAgent's pod mounts. Slot names it within the
// VoiceAgent; it becomes the volume name, the mount folder and, for an
// ExternalSecret, the suffix of the synced Secret.
type Credential struct {
	Slot   string
	Source v1alpha1.CredentialSource
	// InAgent is true for the few credentials the agent itself must hold: the session
	// store key and database credentials (plain TCP, which the gateway cannot proxy).
	InAgent bool
	// SecretName and SecretKey locate the value once synced.
	SecretName string
	SecretKey  string
	// Owner says who syncs an ExternalSecret source: the VoiceAgent or an AuditSink.
	AuditSink string
}

// VolumeName of the credential's volume: a DNS label, even for the slot of an
// AuditSink whose name has dots or is long (see fitName).
func (c Credential) VolumeName() string { return fitName("cred-"+c.Slot, true) }

// MountDir is where the credential's folder is mounted.
func (c Credential) MountDir() string { return path.Join(gatewayconfig.CredentialsDir, c.Slot) }

// File is the credential's file inside the container.
func (c Credential) File() string {
	return path.Join(c.MountDir(), gatewayconfig.CredentialFile)
}

func locate(va *v1alpha1.VoiceAgent, slot string, src v1alpha1.CredentialSource) (string, string) {
	if src.SecretRef != nil {
		return src.SecretRef.Name, src.SecretRef.Key
	}
	return CredentialSecretName(va, slot), gatewayconfig.CredentialFile
}

// Credentials lists every credential of va and of the AuditSinks it uses, in a stable
// order. The session key is included only when the user supplies it.
func Credentials(va *v1alpha1.VoiceAgent, sinks []v1alpha1.AuditSink) []Credential {
	var out []Credential
	add := func(slot string, src v1alpha1.CredentialSource, inAgent bool) {
		name, key := locate(va, slot, src)
		out = append(out, Credential{Slot: slot, Source: src, InAgent: inAgent, SecretName: name, SecretKey: key})
	}
	add("model", va.Spec.Model.Credentials, false)
	for i, fb := range va.Spec.Model.Fallbacks {
		add(fallbackSlot(i), fb.Credentials, false)
	}
	for _, in := range va.Spec.Integrations {
		if in.Credentials == nil {
			continue
		}
		add(integrationSlot(in), *in.Credentials, in.Type == v1alpha1.IntegrationDatabase)
	}
	if enc := va.Spec.Encryption; enc != nil && enc.AtRest != nil && enc.AtRest.KeyFrom != nil {
		add("session-key", *enc.AtRest.KeyFrom, true)
	}
	for _, c := range limitStoreCredentials(va) {
		add(c.slot, *c.src, false)
	}
	for i := range sinks {
		out = append(out, SinkCredentials(&sinks[i])...)
	}
	return out
}

// checkSecretRefs refuses a secretRef the CRD admits but a pod cannot mount: a name
// that is not a Secret name (the CRD bounds only its length) or the key "." or "..".
func checkSecretRefs(va *v1alpha1.VoiceAgent, sinks []v1alpha1.AuditSink) error {
	check := func(field string, src *v1alpha1.CredentialSource) error {
		if src == nil || src.SecretRef == nil {
			return nil
		}
		if msgs := validation.IsDNS1123Subdomain(src.SecretRef.Name); len(msgs) > 0 {
			return fmt.Errorf("%s.secretRef.name: %q is not a Secret name: %s", field, src.SecretRef.Name, msgs[0])
		}
		if msgs := validation.IsConfigMapKey(src.SecretRef.Key); len(msgs) > 0 {
			return fmt.Errorf("%s.secretRef.key: %q: %s", field, src.SecretRef.Key, msgs[0])
		}
		return nil
	}
	errs := []error{check("spec.model.credentials", &va.Spec.Model.Credentials)}
	for i := range va.Spec.Model.Fallbacks {
		errs = append(errs, check(fmt.Sprintf("spec.model.fallbacks[%d].credentials", i), &va.Spec.Model.Fallbacks[i].Credentials))
	}
	for i, in := range va.Spec.Integrations {
		errs = append(errs, check(fmt.Sprintf("spec.integrations[%d].credentials", i), in.Credentials))
	}
	if enc := va.Spec.Encryption; enc != nil && enc.AtRest != nil {
		errs = append(errs, check("spec.encryption.atRest.keyFrom", enc.AtRest.KeyFrom))
	}
	for _, c := range limitStoreCredentials(va) {
		errs = append(errs, check(c.field, c.src))
	}
	for _, s := range sinks {
		if w := s.Spec.Webhook; w != nil && w.Credentials != nil {
			errs = append(errs, check("auditsink "+s.Name+" spec.webhook.credentials.bearerToken", w.Credentials.BearerToken),
				check("auditsink "+s.Name+" spec.webhook.credentials.signingKey", w.Credentials.SigningKey))
		}
	}
	return errors.Join(errs...)
}

// SinkCredentials lists the credentials of one AuditSink.
func SinkCredentials(sink *v1alpha1.AuditSink) []Credential {
	if sink.Spec.Webhook == nil || sink.Spec.Webhook.Credentials == nil {
		return nil
	}
	var out []Credential
	add := func(kind string, src *v1alpha1.CredentialSource) {
		if src == nil {
			return
		}
		name, key := AuditSinkSecretName(sink, kind), gatewayconfig.CredentialFile
		if src.SecretRef != nil {
			name, key = src.SecretRef.Name, src.SecretRef.Key
		}
		out = append(out, Credential{Slot: "sink-" + sink.Name + "-" + kind, Source: *src, SecretName: name, SecretKey: key, AuditSink: sink.Name})
	}
	add("bearer-token", sink.Spec.Webhook.Credentials.BearerToken)
	add("signing-key", sink.Spec.Webhook.Credentials.SigningKey)
	return out
}

func fallbackSlot(i int) string { return "fallback-" + strconv.Itoa(i) }

func integrationSlot(in v1alpha1.Integration) string { return "integration-" + in.Name }

// SecretNames lists the distinct Secrets va's pods mount, sorted.
func SecretNames(creds []Credential) []string {
	set := map[string]bool{}
	for _, c := range creds {
		set[c.SecretName] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
