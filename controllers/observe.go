package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// observed is what a reconcile reads from the cluster before rendering. Secrets are
// read as metadata only: the operator never holds a credential's value.
type observed struct {
	// applied are the children this reconcile applied, by "Kind/name", as the API
	// server answered: the cache may not show them yet when status is written, and a
	// status read from exactly those objects is what lets their events start no
	// reconcile (ownApplies).
	applied      map[string]*unstructured.Unstructured
	sinks        []v1alpha1.AuditSink // referenced sinks that exist, in spec order
	missingSinks []string
	// secrets maps the name of every Secret in the namespace to its resourceVersion.
	secrets map[string]string
	// unownedCertSecrets are the Secrets cert-manager wrote for va's Certificates
	// (labelled by their secretTemplate) that have no owner yet.
	unownedCertSecrets []string
	// agentTokenRotation is the rotation request the agent token's Secret records,
	// agentTokenAnnounced the one whose token it announces under next, agentTokenUID
	// the Secret's UID (a Secret deleted and made anew holds a new token).
	agentTokenRotation, agentTokenAnnounced string
	agentTokenUID                           string
	certManagerInstalled                    bool
	esoInstalled                            bool
	kedaInstalled                           bool
	// generated are the Secrets this reconcile generated, for its Events (recordApplied).
	generated []generatedSecret
}

func (r *VoiceAgentReconciler) observe(ctx context.Context, va *v1alpha1.VoiceAgent) (*observed, error) {
	obs := &observed{secrets: map[string]string{}}
	for _, name := range referencedSinks(va) {
		sink := &v1alpha1.AuditSink{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: va.Namespace, Name: name}, sink)
		switch {
		case isNotFound(err):
			obs.missingSinks = append(obs.missingSinks, name)
		case err != nil:
			return nil, fmt.Errorf("get AuditSink %s: %w", name, err)
		default:
			obs.sinks = append(obs.sinks, *sink)
		}
	}
	certSecrets := map[string]bool{render.TLSSecretName(va): true, render.GatewayTLSSecretName(va): true, render.GatewayCAName(va): true}
	// The Secrets va names, each looked up by name: listing the namespace's read every
	// Secret in it on every reconcile, O(N²) for N VoiceAgents in one namespace.
	for _, name := range secretsOf(va, obs.sinks) {
		s := &metav1.PartialObjectMetadata{}
		s.SetGroupVersionKind(secretGVK)
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: va.Namespace, Name: name}, s); err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("get Secret metadata %s: %w", name, err)
		}
		obs.secrets[s.Name] = s.ResourceVersion
		if certSecrets[s.Name] && len(s.OwnerReferences) == 0 && s.Labels[render.LabelVoiceAgent] == va.Name {
			obs.unownedCertSecrets = append(obs.unownedCertSecrets, s.Name)
		}
		if s.Name == render.AgentTokenSecretName(va) {
			obs.agentTokenRotation = s.Annotations[render.AnnotationRotateAgentToken]
			obs.agentTokenAnnounced, obs.agentTokenUID = s.Annotations[render.AnnotationAgentTokenAnnounced], string(s.UID)
		}
	}
	var err error
	if obs.certManagerInstalled, err = r.optional.installed(ctx, render.CertificateCRD, render.CertificateGVK); err != nil {
		return nil, fmt.Errorf("discover cert-manager: %w", err)
	}
	if obs.esoInstalled, err = r.optional.installed(ctx, render.ExternalSecretCRD, render.ExternalSecretGVK); err != nil {
		return nil, fmt.Errorf("discover External Secrets: %w", err)
	}
	if obs.kedaInstalled, err = r.optional.installed(ctx, render.ScaledObjectCRD, render.ScaledObjectGVK); err != nil {
		return nil, fmt.Errorf("discover KEDA: %w", err)
	}
	return obs, nil
}

var secretGVK = corev1.SchemeGroupVersion.WithKind("Secret")

// secretsOf are the names of the Secrets a reconcile of va reads: those it references
// (the index of Secret events) and those of its sinks' credentials.
func secretsOf(va *v1alpha1.VoiceAgent, sinks []v1alpha1.AuditSink) []string {
	creds := render.Credentials(va, sinks)
	names := append(referencedSecrets(va), render.SecretNames(creds)...)
	names = append(names, render.AgentSecrets(va, creds)...)
	slices.Sort(names)
	return slices.Compact(names)
}

// carriedSpend is what gone gateway pods spent, from status.spend, which the spend
// collector keeps: fed back to the gateways so that a replaced pod does not start the
// day's budget again from zero.
func carriedSpend(s *v1alpha1.SpendStatus) *gw.CarriedSpend {
	if s == nil || len(s.Day) < 7 || (s.CarriedTodayMicros <= 0 && s.CarriedMonthMicros <= 0) {
		return nil
	}
	return &gw.CarriedSpend{Day: s.Day, DailyMicros: s.CarriedTodayMicros, Month: s.Day[:7], MonthMicros: s.CarriedMonthMicros}
}

func (obs *observed) renderInputs(va *v1alpha1.VoiceAgent, image, clusterDomain string, admin render.AdminAccess) render.Inputs {
	versions := map[string]string{}
	for _, name := range render.AgentSecrets(va, render.Credentials(va, obs.sinks)) {
		versions[name] = obs.secrets[name]
	}
	// The agent pods roll when a rotation puts a new token in force, not when one is
	// announced to the gateways (which changes the Secret too).
	versions[render.AgentTokenSecretName(va)] = "uid=" + obs.agentTokenUID + ",rotation=" + obs.agentTokenRotation
	return render.Inputs{
		GatewayImage:        image,
		Sinks:               obs.sinks,
		AgentSecretVersions: versions,
		ClusterDomain:       clusterDomain,
		Admin:               admin,
		CertManager:         obs.certManagerInstalled,
		CarriedSpend:        carriedSpend(va.Status.Spend),
		KEDA:                obs.kedaInstalled,
	}
}

// childKey names a child in events and in observed.applied: "Kind/name".
func childKey(kind, name string) string { return kind + "/" + name }

// justApplied returns the child kind/name as this reconcile's apply answered, nil
// when this reconcile did not apply it.
func (o *observed) justApplied(kind, name string) *unstructured.Unstructured {
	return o.applied[childKey(kind, name)]
}
