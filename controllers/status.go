package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// updateStatus fills va.Status from what was applied and observed. It reports whether
// the VoiceAgent waits on something without a watch (a CRD not installed yet).
func (r *VoiceAgentReconciler) updateStatus(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed, ch *render.Children, applyErr error) bool {
	waiting := false
	ok, reason, msg := r.credentialsCondition(ctx, va, obs, ch)
	setCondition(va, v1alpha1.ConditionCredentialsReady, ok, reason, msg)
	waiting = waiting || reason == v1alpha1.ReasonExternalSecretsNotInstalled

	ok, reason, msg, notAfter := r.certificateCondition(ctx, va, obs)
	setCondition(va, v1alpha1.ConditionCertificateReady, ok, reason, msg)
	waiting = waiting || reason == v1alpha1.ReasonCertManagerNotInstalled
	r.security(va, obs, ch).CertificateNotAfter = notAfter
	if applyErr != nil {
		setCondition(va, v1alpha1.ConditionNetworkIsolated, false, v1alpha1.ReasonApplyFailed,
			"Applying the children failed; the operator retries with backoff. See the operator's log for the cause.")
	} else {
		setCondition(va, v1alpha1.ConditionNetworkIsolated, true, v1alpha1.ReasonNetworkPolicyApplied,
			fmt.Sprintf("Default-deny NetworkPolicy %s applied; egress allowed to %d destinations, ingress from %d peers.",
				ch.NetworkPolicy.Name, len(ch.EgressAllowed), ingressPeers(va)))
	}
	ok, reason, msg = auditCondition(va, obs)
	setCondition(va, v1alpha1.ConditionAuditReady, ok, reason, msg)
	r.availability(ctx, va)

	var pending []string
	for _, t := range []string{v1alpha1.ConditionCredentialsReady, v1alpha1.ConditionCertificateReady,
		v1alpha1.ConditionNetworkIsolated, v1alpha1.ConditionAuditReady, v1alpha1.ConditionAvailable} {
		if c := meta.FindStatusCondition(va.Status.Conditions, t); c == nil || c.Status != metav1.ConditionTrue {
			reason := "Unknown"
			if c != nil {
				reason = c.Reason
			}
			pending = append(pending, t+" ("+reason+")")
		}
	}
	wasReady := meta.IsStatusConditionTrue(va.Status.Conditions, v1alpha1.ConditionReady)
	if len(pending) == 0 {
		setCondition(va, v1alpha1.ConditionReady, true, v1alpha1.ReasonAllConditionsMet, "Every control is in force and the agent is available.")
		if !wasReady {
			r.event(va, corev1.EventTypeNormal, "Ready", "Reconcile", "VoiceAgent is Ready: every control is in force")
		}
	} else {
		setCondition(va, v1alpha1.ConditionReady, false, v1alpha1.ReasonConditionsNotMet, "Waiting for: "+strings.Join(pending, ", ")+".")
		if wasReady {
			r.event(va, corev1.EventTypeWarning, "NotReady", "Reconcile", "VoiceAgent is no longer Ready: waiting for %s", strings.Join(pending, ", "))
		}
	}
	va.Status.Endpoint = render.Endpoint(va)
	return waiting
}

func ingressPeers(va *v1alpha1.VoiceAgent) int {
	if va.Spec.Network == nil {
		return 0
	}
	return len(va.Spec.Network.AllowIngressFrom)
}

// security fills status.security, the evidence an auditor reads.
func (r *VoiceAgentReconciler) security(va *v1alpha1.VoiceAgent, obs *observed, ch *render.Children) *v1alpha1.SecurityStatus {
	if va.Status.Security == nil {
		va.Status.Security = &v1alpha1.SecurityStatus{}
	}
	s := va.Status.Security
	s.PodSecurityLevel = "restricted"
	s.CredentialsInAgentContainer = render.CredentialsInAgent(ch.Credentials)
	s.EgressEnforcement = "cidr"
	s.EgressAllowed = ch.EgressAllowed
	s.TLSSecretName = ""
	if render.TLSEnabled(va) {
		s.TLSSecretName = render.TLSSecretName(va)
	}
	s.AuditSinks = nil
	for _, sink := range obs.sinks {
		s.AuditSinks = append(s.AuditSinks, sink.Name)
	}
	return s
}

func (r *VoiceAgentReconciler) credentialsCondition(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed, ch *render.Children) (bool, string, string) {
	for _, c := range ch.Credentials {
		if c.Source.ExternalSecret != nil && c.AuditSink == "" {
			if !obs.esoInstalled {
				return false, v1alpha1.ReasonExternalSecretsNotInstalled, fmt.Sprintf(
					"Credential %q comes from an external store, but External Secrets Operator is not installed (CRD %s not found). Install it, or use credentials.secretRef.",
					c.Slot, render.ExternalSecretCRD)
			}
			ready, msg := r.externalSecretReady(ctx, va.Namespace, c.SecretName)
			if !ready {
				return false, v1alpha1.ReasonExternalSecretNotSynced, fmt.Sprintf(
					"ExternalSecret %s (credential %q) has not synced yet: %s", c.SecretName, c.Slot, msg)
			}
		}
		if _, ok := obs.secrets[c.SecretName]; !ok {
			return false, v1alpha1.ReasonSecretNotFound, fmt.Sprintf(
				"Secret %s (credential %q) was not found in namespace %s. Create it, or fix the credentials reference.",
				c.SecretName, c.Slot, va.Namespace)
		}
	}
	return true, v1alpha1.ReasonCredentialsSynced, fmt.Sprintf("All %d credentials are present; they are mounted into the gateway container only.", len(ch.Credentials))
}

func (r *VoiceAgentReconciler) externalSecretReady(ctx context.Context, ns, name string) (bool, string) {
	es, err := r.getUnstructured(ctx, render.ExternalSecretGVK, ns, name)
	if isNotFound(err) {
		return false, "not found yet"
	}
	if err != nil {
		log.FromContext(ctx).Error(err, "read ExternalSecret", "externalSecret", name)
		return false, "it cannot be read: " + err.Error()
	}
	return readyCondition(es)
}

func (r *VoiceAgentReconciler) getUnstructured(ctx context.Context, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", gvk.Kind, ns, name, err)
	}
	return u, nil
}

// readyCondition reads the Ready condition that cert-manager and External Secrets both
// publish.
func readyCondition(u *unstructured.Unstructured) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		msg, _ := m["message"].(string)
		return m["status"] == "True", msg
	}
	return false, "no Ready condition yet"
}

func (r *VoiceAgentReconciler) certificateCondition(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed) (bool, string, string, *metav1.Time) {
	if !render.TLSEnabled(va) {
		return true, v1alpha1.ReasonTLSNotRequested,
			"spec.encryption.inTransit is not set: the Service serves plain HTTP inside the cluster. Set it to terminate TLS in the gateway.", nil
	}
	if !obs.certManagerInstalled {
		return false, v1alpha1.ReasonCertManagerNotInstalled, fmt.Sprintf(
			"TLS is requested but cert-manager is not installed (CRD %s not found). Install cert-manager; the VoiceAgent recovers by itself.",
			render.CertificateCRD), nil
	}
	cert, err := r.getUnstructured(ctx, render.CertificateGVK, va.Namespace, va.Name)
	if isNotFound(err) {
		return false, v1alpha1.ReasonCertificateNotReady, "Certificate " + va.Name + " is not in the cache yet.", nil
	}
	if err != nil {
		log.FromContext(ctx).Error(err, "read Certificate", "certificate", va.Name)
		return false, v1alpha1.ReasonCertificateNotReady, "Certificate " + va.Name + " cannot be read: " + err.Error() + ". See the operator's log.", nil
	}
	var notAfter *metav1.Time
	if s, ok, _ := unstructured.NestedString(cert.Object, "status", "notAfter"); ok {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			notAfter = &metav1.Time{Time: t}
		}
	}
	ready, msg := readyCondition(cert)
	if !ready {
		return false, v1alpha1.ReasonCertificateNotReady, fmt.Sprintf(
			"Certificate %s is not ready: %s. Check the issuer %s.", va.Name, msg, va.Spec.Encryption.InTransit.IssuerRef.Name), notAfter
	}
	return true, v1alpha1.ReasonCertificateIssued, fmt.Sprintf("Certificate %s is issued into Secret %s.", va.Name, render.TLSSecretName(va)), notAfter
}

func auditCondition(va *v1alpha1.VoiceAgent, obs *observed) (bool, string, string) {
	if len(obs.missingSinks) > 0 {
		return false, v1alpha1.ReasonSinkNotFound, fmt.Sprintf(
			"AuditSink %s referenced by spec.audit.sinkRefs does not exist in namespace %s. Create it or remove the reference.",
			strings.Join(obs.missingSinks, ", "), va.Namespace)
	}
	for _, s := range obs.sinks {
		if c := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason == v1alpha1.ReasonDeliveryFailing {
			return false, v1alpha1.ReasonSinkDeliveryFailing, fmt.Sprintf("AuditSink %s: %s", s.Name, c.Message)
		}
		if !meta.IsStatusConditionTrue(s.Status.Conditions, v1alpha1.ConditionReady) {
			return false, v1alpha1.ReasonSinkNotReady, fmt.Sprintf("AuditSink %s is not Ready; see its status.", s.Name)
		}
	}
	if len(obs.sinks) == 0 {
		return true, v1alpha1.ReasonNoSinksConfigured, "No AuditSink is referenced: the gateway writes audit records to its own log only."
	}
	return true, v1alpha1.ReasonSinksReady, fmt.Sprintf("%d AuditSinks are Ready.", len(obs.sinks))
}

// availability mirrors the Deployment's state into Available and the replica counts.
func (r *VoiceAgentReconciler) availability(ctx context.Context, va *v1alpha1.VoiceAgent) {
	dep := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: va.Namespace, Name: va.Name}, dep); err != nil {
		log.FromContext(ctx).V(1).Info("Deployment not readable yet", "error", err.Error())
		setCondition(va, v1alpha1.ConditionAvailable, false, v1alpha1.ReasonDeploymentUnavailable, "Deployment "+va.Name+" is not created yet.")
		return
	}
	va.Status.Replicas = dep.Status.Replicas
	va.Status.ReadyReplicas = dep.Status.ReadyReplicas
	want := render.Replicas(va)
	for _, c := range dep.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue &&
			dep.Status.ObservedGeneration >= dep.Generation && dep.Status.ReadyReplicas >= want {
			setCondition(va, v1alpha1.ConditionAvailable, true, v1alpha1.ReasonDeploymentAvailable,
				fmt.Sprintf("%d of %d replicas are ready.", dep.Status.ReadyReplicas, want))
			return
		}
	}
	setCondition(va, v1alpha1.ConditionAvailable, false, v1alpha1.ReasonDeploymentUnavailable, fmt.Sprintf(
		"%d of %d replicas are ready. If this lasts, check the Deployment's events (image pull, Pod Security admission).",
		dep.Status.ReadyReplicas, want))
}
