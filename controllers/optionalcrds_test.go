package controllers_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// TestMissingCertManagerAndExternalSecrets runs a second API server without the CRDs
// of cert-manager and External Secrets: the manager still starts, the VoiceAgent says
// why it waits, and recovers by itself once the CRDs are installed.
func TestMissingCertManagerAndExternalSecrets(t *testing.T) {
	env := newEnvironment(false)
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := manager.New(cfg, manager.Options{MetricsAddr: "0", ProbeAddr: "0", GatewayImage: testImage, SkipNameValidation: true})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	va := fullVoiceAgent("default", "waiting")
	if err := c.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	is := func(typ, reason string, status metav1.ConditionStatus) func() error {
		return conditionOn(c, "default", "waiting", typ, status, reason)
	}
	eventually(t, waitFor, is(v1alpha1.ConditionCertificateReady, v1alpha1.ReasonCertManagerNotInstalled, metav1.ConditionFalse))
	eventually(t, waitFor, is(v1alpha1.ConditionCredentialsReady, v1alpha1.ReasonExternalSecretsNotInstalled, metav1.ConditionFalse))
	// The rest of the VoiceAgent is still in force.
	eventually(t, waitFor, is(v1alpha1.ConditionNetworkIsolated, v1alpha1.ReasonNetworkPolicyApplied, metav1.ConditionTrue))

	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{repoPath("bin", "crds", "cert-manager"), repoPath("bin", "crds", "external-secrets")},
	}); err != nil {
		t.Fatal(err)
	}
	cert := unstructuredKey(render.CertificateGVK, "default", "waiting")
	es := unstructuredKey(render.ExternalSecretGVK, "default", "waiting-model")
	eventually(t, waitFor, func() error { return c.Get(ctx, client.ObjectKeyFromObject(cert), cert) })
	eventually(t, waitFor, func() error { return c.Get(ctx, client.ObjectKeyFromObject(es), es) })
	eventually(t, waitFor, is(v1alpha1.ConditionCertificateReady, v1alpha1.ReasonCertificateNotReady, metav1.ConditionFalse))
	eventually(t, waitFor, is(v1alpha1.ConditionCredentialsReady, v1alpha1.ReasonExternalSecretNotSynced, metav1.ConditionFalse))
}
