package render

import (
	"path"
	"sort"
	"strconv"

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

// VolumeName of the credential's volume.
func (c Credential) VolumeName() string { return "cred-" + c.Slot }

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
	for i := range sinks {
		out = append(out, SinkCredentials(&sinks[i])...)
	}
	return out
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
