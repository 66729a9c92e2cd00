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
	"k8s.io/apimachinery/pkg/runtime"
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
			fmt.Sprintf("Default-deny NetworkPolicies applied: %s lets the agent pods reach DNS, their gateway and %d declared in-cluster destinations, from %d ingress peers; %s lets the gateway pods reach %d destinations.",
				ch.NetworkPolicy.Name, len(ch.NetworkPolicy.Spec.Egress)-2, ingressPeers(va), ch.GatewayNetworkPolicy.Name, len(ch.EgressAllowed)))
	}
	ok, reason, msg = auditCondition(va, obs)
	setCondition(va, v1alpha1.ConditionAuditReady, ok, reason, msg)
	ok, reason, msg = r.agentTrafficCondition(ctx, va, obs)
	setCondition(va, v1alpha1.ConditionAgentTrafficEncrypted, ok, reason, msg)
	ok, reason, msg = autoscalingCondition(va, obs)
	setCondition(va, v1alpha1.ConditionAutoscaling, ok, reason, msg)
	r.availability(ctx, va, obs)

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
	s.AgentEgress = render.AgentEgress(va)
	s.AgentToGateway = "plaintext"
	if obs.certManagerInstalled {
		s.AgentToGateway = "tls"
	}
	s.AgentTokenSecretName = render.AgentTokenSecretName(va)
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
			ready, msg := r.externalSecretReady(ctx, obs, va.Namespace, c.SecretName)
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
	return true, v1alpha1.ReasonCredentialsSynced, fmt.Sprintf("All %d credentials are present; provider and integration credentials are mounted into the gateway pods only.", len(ch.Credentials))
}

func (r *VoiceAgentReconciler) externalSecretReady(ctx context.Context, obs *observed, ns, name string) (bool, string) {
	es, err := r.getUnstructured(ctx, obs, render.ExternalSecretGVK, ns, name)
	if isNotFound(err) {
		return false, "not found yet"
	}
	if err != nil {
		log.FromContext(ctx).Error(err, "read ExternalSecret", "externalSecret", name)
		return false, "it cannot be read: " + err.Error()
	}
	return readyCondition(es)
}

// getUnstructured reads a child: as the API server answered this reconcile's apply
// of it, if there was one (the cache may not show that yet), else from the cache.
func (r *VoiceAgentReconciler) getUnstructured(ctx context.Context, obs *observed, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	if applied := obs.justApplied(gvk.Kind, name); applied != nil {
		return applied.DeepCopy(), nil
	}
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
	cert, err := r.getUnstructured(ctx, obs, render.CertificateGVK, va.Namespace, va.Name)
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

// agentTrafficCondition says whether the agent's calls to its gateway are encrypted:
// they are once cert-manager has issued the gateway's certificate.
func (r *VoiceAgentReconciler) agentTrafficCondition(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed) (bool, string, string) {
	if !obs.certManagerInstalled {
		return false, v1alpha1.ReasonCertManagerNotInstalled, fmt.Sprintf(
			"cert-manager is not installed (CRD %s not found): the agent's calls to its gateway cross the pod network as plain HTTP, authenticated by the agent token but not encrypted. Install cert-manager; the VoiceAgent then encrypts them by itself.",
			render.CertificateCRD)
	}
	name := render.GatewayName(va)
	cert, err := r.getUnstructured(ctx, obs, render.CertificateGVK, va.Namespace, name)
	if isNotFound(err) {
		return false, v1alpha1.ReasonGatewayCertificateNotReady, "Certificate " + name + " is not in the cache yet."
	}
	if err != nil {
		log.FromContext(ctx).Error(err, "read Certificate", "certificate", name)
		return false, v1alpha1.ReasonGatewayCertificateNotReady, "Certificate " + name + " cannot be read: " + err.Error() + ". See the operator's log."
	}
	if ready, msg := readyCondition(cert); !ready {
		return false, v1alpha1.ReasonGatewayCertificateNotReady, fmt.Sprintf(
			"Certificate %s (signed by the VoiceAgent's own CA, Issuer %s) is not ready: %s. The gateway pods start once it is issued.",
			name, render.GatewayCAName(va), msg)
	}
	return true, v1alpha1.ReasonGatewayCertificateIssued, fmt.Sprintf(
		"The agent's calls to its gateway are encrypted: the gateway serves Certificate %s, and the agent pods trust only the VoiceAgent's own CA (%s).",
		name, render.GatewayCAName(va))
}

// autoscalingCondition says how the agent pods are scaled.
func autoscalingCondition(va *v1alpha1.VoiceAgent, obs *observed) (bool, string, string) {
	a := va.Spec.Autoscaling
	switch {
	case a == nil:
		return false, v1alpha1.ReasonAutoscalingNotRequested, fmt.Sprintf(
			"spec.autoscaling is not set: the agent runs spec.replicas (%d) pods.", render.Replicas(va))
	case obs.kedaInstalled:
		return true, v1alpha1.ReasonScalingOnSessions, fmt.Sprintf(
			"ScaledObject %s scales the agent pods between %d and %d on the realtime sessions in progress, %d per pod (query %s).",
			va.Name, render.MinAgentReplicas(va), a.MaxReplicas, a.TargetActiveSessionsPerReplica, render.ActiveSessionsQuery(va))
	}
	return true, v1alpha1.ReasonScalingOnCPU, fmt.Sprintf(
		"HorizontalPodAutoscaler %s scales the agent pods between %d and %d on CPU only: scaling on calls needs KEDA (CRD %s not found). Install KEDA; the VoiceAgent switches by itself. CPU is a poor signal for voice: a pod can be full of calls at low CPU.",
		va.Name, render.MinAgentReplicas(va), a.MaxReplicas, render.ScaledObjectCRD)
}

// availability mirrors both Deployments into Available and the replica counts: the
// VoiceAgent is available only when its agent pods and its gateway pods both are.
func (r *VoiceAgentReconciler) availability(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed) {
	agent, agentMsg := r.deploymentAvailable(ctx, obs, va.Namespace, va.Name, render.MinAgentReplicas(va), "agent")
	gateway, gatewayMsg := r.deploymentAvailable(ctx, obs, va.Namespace, render.GatewayName(va), render.GatewayReplicas(va), "gateway")
	va.Status.Replicas, va.Status.ReadyReplicas = agent.replicas, agent.ready
	va.Status.GatewayReplicas, va.Status.GatewayReadyReplicas = gateway.replicas, gateway.ready
	if agent.available && gateway.available {
		setCondition(va, v1alpha1.ConditionAvailable, true, v1alpha1.ReasonDeploymentAvailable, agentMsg+" "+gatewayMsg)
		return
	}
	setCondition(va, v1alpha1.ConditionAvailable, false, v1alpha1.ReasonDeploymentUnavailable, agentMsg+" "+gatewayMsg+
		" If this lasts, check the Deployments' events (image pull, Pod Security admission, a certificate not issued yet).")
}

type deploymentState struct {
	replicas, ready int32
	available       bool
}

// deploymentAvailable reads a Deployment as the API server answered this reconcile's
// apply of it, if there was one (the cache may not show that yet), else from the
// cache: the status written now is then the one a reconcile that sees the same object
// in the cache computes too, and does not write again. Any later change of the
// Deployment (its rollout) comes as an event of its own.
func (r *VoiceAgentReconciler) deploymentAvailable(ctx context.Context, obs *observed, ns, name string, want int32, what string) (deploymentState, string) {
	dep := &appsv1.Deployment{}
	if applied := obs.justApplied("Deployment", name); applied != nil {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(applied.Object, dep); err != nil {
			log.FromContext(ctx).Error(err, "read the Deployment the apply returned", "deployment", name)
			return deploymentState{}, fmt.Sprintf("The %s Deployment %s is not created yet.", what, name)
		}
	} else if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
		log.FromContext(ctx).V(1).Info("Deployment not readable yet", "deployment", name, "error", err.Error())
		return deploymentState{}, fmt.Sprintf("The %s Deployment %s is not created yet.", what, name)
	}
	st := deploymentState{replicas: dep.Status.Replicas, ready: dep.Status.ReadyReplicas}
	for _, c := range dep.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue &&
			dep.Status.ObservedGeneration >= dep.Generation && dep.Status.ReadyReplicas >= want {
			st.available = true
		}
	}
	return st, fmt.Sprintf("%s: %d of %d %s replicas are ready.", name, dep.Status.ReadyReplicas, want, what)
}
