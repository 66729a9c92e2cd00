package controllers_test

import (
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// TestCanaryCredentialNeverLeaks plants a recognisable value in the Secrets a
// VoiceAgent and its AuditSink use, drives the VoiceAgent to Ready, and then searches
// every object in the namespace except those Secrets, every event, and the operator's
// whole log for it.
func TestCanaryCredentialNeverLeaks(t *testing.T) {
	const canary = "CANARY-sk-9f8e7d6c5b4a39281706"
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", canary)
	createSecret(t, ns, "crm-token", "token", canary+"-crm")
	createSecret(t, ns, "siem", "token", canary+"-siem")
	sink := &v1alpha1.AuditSink{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "soc"}, Spec: v1alpha1.AuditSinkSpec{
		Type: v1alpha1.AuditSinkWebhook, Webhook: &v1alpha1.WebhookSink{URL: "https://siem.example.com/in",
			Credentials: &v1alpha1.WebhookCredentials{BearerToken: &v1alpha1.CredentialSource{SecretRef: &v1alpha1.SecretKeyReference{Name: "siem", Key: "token"}}}},
	}}
	if err := k8s.Create(ctx, sink); err != nil {
		t.Fatal(err)
	}
	va := minimalVoiceAgent(ns, "canary")
	crmCreds := secretRef("crm-token", "token")
	va.Spec.Integrations = []v1alpha1.Integration{{Name: "crm", Type: v1alpha1.IntegrationREST, Endpoint: "https://crm.example.com",
		Auth: &v1alpha1.IntegrationAuth{Type: v1alpha1.AuthBearer}, Credentials: &crmCreds}}
	va.Spec.Audit = &v1alpha1.AuditSpec{SinkRefs: []v1alpha1.LocalObjectReference{{Name: "soc"}}}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	markDeploymentAvailable(t, ns, "canary")
	eventually(t, waitFor, conditionIs(ns, "canary", v1alpha1.ConditionReady, metav1.ConditionTrue, ""))

	var dump strings.Builder
	add := func(list client.ObjectList) {
		if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(list)
		dump.Write(b)
	}
	add(&v1alpha1.VoiceAgentList{})
	add(&v1alpha1.AuditSinkList{})
	add(&corev1.ConfigMapList{})
	add(&appsv1.DeploymentList{})
	add(&corev1.ServiceList{})
	add(&corev1.ServiceAccountList{})
	add(&eventsv1.EventList{})
	add(&corev1.EventList{})
	secrets := &corev1.SecretList{}
	if err := k8s.List(ctx, secrets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	// The agent token is a credential too: the operator wrote it into its Secret and
	// must write it nowhere else.
	var token string
	for _, s := range secrets.Items {
		if s.Name == "canary-agent-token" {
			token = string(s.Data["token"])
		}
	}
	if len(token) < 40 {
		t.Fatalf("agent token of %d bytes, want 32 random bytes encoded", len(token))
	}
	for _, s := range secrets.Items {
		if s.Name == "gemini-key" || s.Name == "crm-token" || s.Name == "siem" || s.Name == "canary-agent-token" {
			continue // where the user, or for the token the operator, put it
		}
		b, _ := json.Marshal(s)
		dump.Write(b)
	}
	if dump.Len() < 1000 {
		t.Fatalf("suspiciously little was searched: %d bytes", dump.Len())
	}
	if strings.Contains(dump.String(), canary) {
		t.Error("the canary credential appears in an object the operator wrote")
	}
	if strings.Contains(dump.String(), token) {
		t.Error("the agent token appears in an object other than its Secret")
	}
	log := operatorLog.String()
	if !strings.Contains(log, "canary") {
		t.Fatal("the operator log has no line about this VoiceAgent; the log capture is broken")
	}
	if strings.Contains(log, canary) {
		t.Error("the canary credential appears in the operator's log")
	}
	if strings.Contains(log, token) {
		t.Error("the agent token appears in the operator's log")
	}
}
