package controllers_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// bareClusterWithManager starts a second API server without any third-party CRD, and a
// manager on it, both stopped when the test ends; it returns a client and the config.
func bareClusterWithManager(t *testing.T) (client.Client, *rest.Config) {
	t.Helper()
	env := newEnvironment(false)
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
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
	t.Cleanup(func() { // runs before env.Stop: cleanups run last-registered first
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return c, cfg
}

// TestMissingCertManagerAndExternalSecrets runs a second API server without the CRDs
// of cert-manager and External Secrets: the manager still starts, the VoiceAgent says
// why it waits, and recovers by itself once the CRDs are installed.
func TestMissingCertManagerAndExternalSecrets(t *testing.T) {
	c, cfg := bareClusterWithManager(t)

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
