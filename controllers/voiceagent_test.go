package controllers_test

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

func TestVoiceAgentCreatesHardenedChildrenAndBecomesReady(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "not-a-real-key")
	va := minimalVoiceAgent(ns, "hello")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}

	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello"}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello"}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-gateway"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello"}}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello"}}
	key := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-session-key"}}
	token := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-agent-token"}}
	gwDep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-gateway"}}
	gwSA := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-gateway"}}
	gwSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-gateway"}}
	gwNP := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-gateway"}}
	gwCert := unstructuredKey(render.CertificateGVK, ns, "hello-gateway")
	gwIssuer := unstructuredKey(render.IssuerGVK, ns, "hello-gateway-ca")
	for _, obj := range []client.Object{dep, sa, cm, svc, np, key, token, gwDep, gwSA, gwSvc, gwNP, gwCert, gwIssuer} {
		eventually(t, waitFor, exists(obj))
	}
	for _, obj := range []client.Object{dep, sa, cm, svc, np, gwDep, gwSA, gwSvc, gwNP, gwCert, gwIssuer} {
		if !metav1.IsControlledBy(obj, getVA(t, ns, "hello")) {
			t.Errorf("%T %s is not controlled by the VoiceAgent", obj, obj.GetName())
		}
	}
	for _, a := range []*corev1.ServiceAccount{sa, gwSA} {
		if a.AutomountServiceAccountToken == nil || *a.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s automounts its token", a.Name)
		}
	}
	if _, err := gatewayconfig.Parse([]byte(cm.Data[gatewayconfig.FileName])); err != nil {
		t.Errorf("the gateway cannot parse the rendered config: %v", err)
	}
	if len(np.Spec.PolicyTypes) != 2 || len(np.Spec.Ingress) != 0 {
		t.Errorf("NetworkPolicy is not default-deny: %+v", np.Spec)
	}
	if len(gwNP.Spec.PolicyTypes) != 2 || len(gwNP.Spec.Ingress) != 1 {
		t.Errorf("the gateway's NetworkPolicy admits more than its agent pods: %+v", gwNP.Spec)
	}
	// Two workloads: the agent pods hold no credential and run the user's image alone;
	// the gateway pods run the operator's image.
	pod, gwPod := dep.Spec.Template.Spec, gwDep.Spec.Template.Spec
	if len(pod.Containers) != 1 || pod.Containers[0].Name != render.AgentContainer {
		t.Fatalf("agent pod containers: %+v", pod.Containers)
	}
	if len(gwPod.Containers) != 1 || gwPod.Containers[0].Image != testImage || gwPod.ServiceAccountName != "hello-gateway" {
		t.Fatalf("gateway pod: %+v", gwPod)
	}

	eventually(t, waitFor, conditionIs(ns, "hello", v1alpha1.ConditionCredentialsReady, metav1.ConditionTrue, v1alpha1.ReasonCredentialsSynced))
	eventually(t, waitFor, conditionIs(ns, "hello", v1alpha1.ConditionNetworkIsolated, metav1.ConditionTrue, ""))
	eventually(t, waitFor, conditionIs(ns, "hello", v1alpha1.ConditionAvailable, metav1.ConditionFalse, v1alpha1.ReasonDeploymentUnavailable))
	eventually(t, waitFor, conditionIs(ns, "hello", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonConditionsNotMet))

	markDeploymentAvailable(t, ns, "hello")
	eventually(t, waitFor, conditionIs(ns, "hello", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonAllConditionsMet))
	got := getVA(t, ns, "hello")
	if got.Status.ObservedGeneration != got.Generation || got.Status.ReadyReplicas != 1 {
		t.Errorf("status: observedGeneration %d (gen %d), readyReplicas %d", got.Status.ObservedGeneration, got.Generation, got.Status.ReadyReplicas)
	}
	sec := got.Status.Security
	if sec == nil || sec.PodSecurityLevel != "restricted" || sec.CredentialsInAgentContainer || sec.EgressEnforcement != "cidr" ||
		strings.Join(sec.EgressAllowed, ",") != "dns:53,generativelanguage.googleapis.com:443" ||
		sec.AgentEgress != "gatewayOnly" || sec.AgentToGateway != "tls" || sec.AgentTokenSecretName != "hello-agent-token" {
		t.Errorf("status.security = %+v", sec)
	}
	if got.Status.GatewayReadyReplicas != 2 {
		t.Errorf("status.gatewayReadyReplicas = %d, want the default 2", got.Status.GatewayReadyReplicas)
	}
	// cert-manager's CRDs are installed here but no cert-manager runs: the hop is not
	// encrypted yet, and the condition says which certificate it waits for.
	eventually(t, waitFor, conditionIs(ns, "hello", v1alpha1.ConditionAgentTrafficEncrypted, metav1.ConditionFalse, v1alpha1.ReasonGatewayCertificateNotReady))
	setReadyStatus(t, gwCert, nil)
	eventually(t, waitFor, conditionIs(ns, "hello", v1alpha1.ConditionAgentTrafficEncrypted, metav1.ConditionTrue, v1alpha1.ReasonGatewayCertificateIssued))
	if got.Status.Endpoint != "http://hello."+ns+".svc:80" {
		t.Errorf("endpoint %s", got.Status.Endpoint)
	}
	eventually(t, waitFor, func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return err
		}
		reasons := map[string]bool{}
		var createdNote string
		for _, e := range evs.Items {
			reasons[e.Reason] = true
			if e.Reason == "Created" {
				createdNote = e.Note
			}
		}
		if !reasons["Created"] || !reasons["Ready"] {
			return fmt.Errorf("events so far: %v", reasons)
		}
		// The create is one Event: the audit record of generation 1 (who wrote the spec),
		// every child created, and the Secrets generated, which had an Event each before.
		for _, r := range []string{"SessionKeyGenerated", "AgentTokenGenerated", "SpecChangeApplied"} {
			if reasons[r] {
				return fmt.Errorf("a %s event beside Created for a create: %v", r, reasons)
			}
		}
		for _, want := range []string{"Generation 1 (spec last changed by ", "created ", "ServiceAccount/hello, ",
			"ServiceAccount/hello-gateway", "ConfigMap/hello-gateway", "NetworkPolicy/hello,", "NetworkPolicy/hello-gateway",
			"Service/hello,", "Service/hello-gateway", "Deployment/hello-gateway", "Deployment/hello,", "Certificate/hello-gateway",
			"generated the AES-256-GCM session key in Secret hello-session-key",
			"the agent token in Secret hello-agent-token (the gateway accepts only calls that carry it)"} {
			if !strings.Contains(createdNote, want) {
				return fmt.Errorf("the Created event's note %q lacks %q", createdNote, want)
			}
		}
		return nil
	})

	// The agent token's Secret deleted by hand: a new token at once, and its own Event
	// (nothing else is created beside it).
	if err := k8s.Delete(ctx, token); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "AgentTokenGenerated" && e.Regarding.Name == "hello" &&
				e.Note == "Generated the agent token in Secret hello-agent-token (the gateway accepts only calls that carry it)" {
				return nil
			}
		}
		return fmt.Errorf("no AgentTokenGenerated event after the token's Secret was deleted")
	})
}

func fullVoiceAgent(ns, name string) *v1alpha1.VoiceAgent {
	va := minimalVoiceAgent(ns, name)
	va.Spec.Replicas = ptr.To[int32](2)
	va.Spec.Model.Credentials = *externalRef("prod/gemini")
	va.Spec.Integrations = []v1alpha1.Integration{
		{Name: "crm", Type: v1alpha1.IntegrationREST, Endpoint: "https://crm.example.com/api",
			Auth: &v1alpha1.IntegrationAuth{Type: v1alpha1.AuthBearer}, Credentials: externalRef("prod/crm")},
		{Name: "orders-db", Type: v1alpha1.IntegrationDatabase, Host: "orders-db.data.svc.cluster.local", Port: ptr.To[int32](5432)},
	}
	va.Spec.Encryption = &v1alpha1.Encryption{InTransit: &v1alpha1.InTransitEncryption{
		IssuerRef: v1alpha1.IssuerReference{Kind: "ClusterIssuer", Name: "internal-ca"},
	}}
	return va
}

// TestAgentTokenRotatesOnRequest: the annotation asks for a new token. The operator
// first announces it under next (the gateway pods accept it beside the current one)
// without touching token and without rolling the agent pods; after the settle time it
// puts it in force, records the request and rolls the agent pods; each request is
// answered once. The current token is never read: both steps are merge patches.
func TestAgentTokenRotatesOnRequest(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	if err := k8s.Create(ctx, minimalVoiceAgent(ns, "rot")); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: ns, Name: "rot-agent-token"}
	secret := &corev1.Secret{}
	eventually(t, waitFor, func() error { return k8s.Get(ctx, key, secret) })
	first := string(secret.Data["token"])
	hash := func() string {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "rot"}, d); err != nil {
			return ""
		}
		return d.Spec.Template.Annotations[render.AnnotationRestartHash]
	}
	eventually(t, waitFor, func() error {
		if hash() == "" {
			return fmt.Errorf("no agent Deployment yet")
		}
		return nil
	})
	before := hash()

	// Watch the Secret's versions from now on, to see both steps.
	wc, err := client.NewWithWatch(suiteCfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &corev1.SecretList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	va := getVA(t, ns, "rot")
	patch := client.MergeFrom(va.DeepCopy())
	va.Annotations = map[string]string{render.AnnotationRotateAgentToken: "1"}
	if err := k8s.Patch(ctx, va, patch); err != nil {
		t.Fatal(err)
	}
	var announced, inForce *corev1.Secret
	deadline := time.After(waitFor)
	for inForce == nil {
		select {
		case ev := <-w.ResultChan():
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || s.Name != key.Name {
				continue
			}
			switch {
			case announced == nil && len(s.Data["next"]) > 0:
				announced = s.DeepCopy()
				if h := hash(); h != before {
					t.Errorf("the agent pods rolled when the token was only announced")
				}
			case s.Annotations[render.AnnotationRotateAgentToken] == "1":
				inForce = s.DeepCopy()
			}
		case <-deadline:
			t.Fatalf("rotation not done within %s (announced: %v)", waitFor, announced != nil)
		}
	}
	if announced == nil {
		t.Fatal("the new token went in force without being announced first")
	}
	next := string(announced.Data["next"])
	if string(announced.Data["token"]) != first || next == first || len(next) < 40 {
		t.Errorf("announce step: token changed %v, next %d bytes", string(announced.Data["token"]) != first, len(next))
	}
	if string(inForce.Data["token"]) != next || len(inForce.Data["next"]) != 0 || inForce.Annotations[render.AnnotationAgentTokenAnnounced] != "" {
		t.Errorf("in-force step: token is the announced one %v, next left %d bytes, announced annotation %q",
			string(inForce.Data["token"]) == next, len(inForce.Data["next"]), inForce.Annotations[render.AnnotationAgentTokenAnnounced])
	}
	eventually(t, waitFor, func() error {
		if h := hash(); h == before {
			return fmt.Errorf("the agent pods are not rolled (restart hash %s)", h)
		}
		return nil
	})
	if !metav1.IsControlledBy(inForce, getVA(t, ns, "rot")) {
		t.Error("the rotated Secret lost its owner")
	}
	// Answered once: more reconciles (the Deployment's own events) write no new token.
	markDeploymentAvailable(t, ns, "rot")
	eventually(t, waitFor, conditionIs(ns, "rot", v1alpha1.ConditionAvailable, metav1.ConditionTrue, ""))
	if err := k8s.Get(ctx, key, secret); err != nil {
		t.Fatal(err)
	}
	if string(secret.Data["token"]) != next {
		t.Error("the token was rotated again without a new request")
	}
	// Deleted, the Secret is made anew with a new token, and the agent pods roll onto it.
	rolled := hash()
	if err := k8s.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		if s.UID == secret.UID || string(s.Data["token"]) == next {
			return fmt.Errorf("not made anew yet")
		}
		if h := hash(); h == rolled {
			return fmt.Errorf("the agent pods are not rolled onto the new Secret")
		}
		return nil
	})
}

// TestCertManagersSecretsAreOwned: cert-manager leaves the Secrets it writes behind when
// their Certificate goes; the operator gives the ones of its VoiceAgent's Certificates
// (labelled by their secretTemplate) an owner reference, so that they go with it (the
// gateway's CA holds a private key). A Secret someone else owns is left alone.
func TestCertManagersSecretsAreOwned(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	if err := k8s.Create(ctx, minimalVoiceAgent(ns, "owned")); err != nil {
		t.Fatal(err)
	}
	va := &v1alpha1.VoiceAgent{}
	eventually(t, waitFor, func() error { return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "owned"}, va) })
	// Play cert-manager: the CA's Secret, with the secretTemplate's labels and no owner.
	for _, name := range []string{"owned-gateway-ca", "owned-gateway-tls"} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: render.Labels(va)},
			Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k"), "ca.crt": []byte("a")}}
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"owned-gateway-ca", "owned-gateway-tls"} {
		eventually(t, waitFor, func() error {
			s := &corev1.Secret{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
				return err
			}
			if refs := s.OwnerReferences; len(refs) != 1 || refs[0].UID != va.UID {
				return fmt.Errorf("%s owners %v", name, refs)
			}
			if string(s.Data["tls.key"]) != "k" {
				return fmt.Errorf("%s data changed", name)
			}
			return nil
		})
	}
}

// TestCertSecretsOfADeletedVoiceAgentAreRemoved: a VoiceAgent deleted before the
// reconcile that would adopt its cert-manager Secrets (or whose Certificate is issued
// while it is being deleted) leaves them without an owner; the operator deletes them.
// Secrets that are not cert-manager's, or that someone owns, stay.
func TestCertSecretsOfADeletedVoiceAgentAreRemoved(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "gone")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error { return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gone"}, va) })
	if err := k8s.Delete(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gone"}, &v1alpha1.VoiceAgent{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("VoiceAgent still there: %w", err)
		}
		return nil
	})
	// Play cert-manager, late: Secrets with the secretTemplate's labels and its
	// annotation, no owner.
	certManagers := map[string]string{"cert-manager.io/certificate-name": "gone-gateway-ca"}
	someoneElse := []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "keeper", UID: "0a0b0c0d-0000-0000-0000-000000000001"}}
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "gone-gateway-ca", Labels: render.Labels(va), Annotations: certManagers}},
		{ObjectMeta: metav1.ObjectMeta{Name: "gone-tls", Labels: render.Labels(va)}}, // not cert-manager's
		{ObjectMeta: metav1.ObjectMeta{Name: "gone-gateway-tls", Labels: render.Labels(va), Annotations: certManagers, OwnerReferences: someoneElse}},
	} {
		s.Namespace = ns
		s.Data = map[string][]byte{"tls.key": []byte("k")}
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, waitFor, func() error {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gone-gateway-ca"}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("gone-gateway-ca still there: %w", err)
		}
		return nil
	})
	for _, name := range []string{"gone-tls", "gone-gateway-tls"} {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.Secret{}); err != nil {
			t.Errorf("%s: %v (it is not an unowned cert-manager Secret: it stays)", name, err)
		}
	}
}

func TestTLSAndExternalSecretsAgainstRealCRDs(t *testing.T) {
	ns := newNamespace(t)
	va := fullVoiceAgent(ns, "support")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	cert := unstructuredKey(render.CertificateGVK, ns, "support")
	esModel := unstructuredKey(render.ExternalSecretGVK, ns, "support-model")
	esCRM := unstructuredKey(render.ExternalSecretGVK, ns, "support-integration-crm")
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "support"}}
	for _, obj := range []client.Object{cert, esModel, esCRM, pdb} {
		eventually(t, waitFor, exists(obj))
	}
	if dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames"); strings.Join(dns, ",") != "support."+ns+".svc,support."+ns+".svc.cluster.local" {
		t.Errorf("certificate dnsNames %v", dns)
	}
	eventually(t, waitFor, conditionIs(ns, "support", v1alpha1.ConditionCertificateReady, metav1.ConditionFalse, v1alpha1.ReasonCertificateNotReady))
	eventually(t, waitFor, conditionIs(ns, "support", v1alpha1.ConditionCredentialsReady, metav1.ConditionFalse, v1alpha1.ReasonExternalSecretNotSynced))

	// Play cert-manager and External Secrets: issue the certificate, sync the secrets.
	setReadyStatus(t, cert, map[string]any{"notAfter": "2027-02-22T00:00:00Z"})
	for _, es := range []*unstructured.Unstructured{esModel, esCRM} {
		setReadyStatus(t, es, nil)
		createSecret(t, ns, es.GetName(), "value", "synced")
	}
	eventually(t, waitFor, conditionIs(ns, "support", v1alpha1.ConditionCertificateReady, metav1.ConditionTrue, v1alpha1.ReasonCertificateIssued))
	eventually(t, waitFor, conditionIs(ns, "support", v1alpha1.ConditionCredentialsReady, metav1.ConditionTrue, v1alpha1.ReasonCredentialsSynced))
	got := getVA(t, ns, "support")
	if s := got.Status.Security; s == nil || s.CertificateNotAfter == nil || s.CertificateNotAfter.UTC().Format("2006-01-02") != "2027-02-22" || s.TLSSecretName != "support-tls" {
		t.Errorf("status.security = %+v", got.Status.Security)
	}
	if got.Status.Endpoint != "https://support."+ns+".svc:8443" {
		t.Errorf("endpoint = %s", got.Status.Endpoint)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "support"}}
	eventually(t, waitFor, exists(svc))
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8443 {
		t.Errorf("service ports %+v, want only 8443", svc.Spec.Ports)
	}
}

func TestDriftIsReverted(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	if err := k8s.Create(ctx, minimalVoiceAgent(ns, "drift")); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift-gateway"}}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift"}}
	eventually(t, waitFor, exists(dep))
	eventually(t, waitFor, exists(np))
	// Drift is what changes while the spec does not: wait until status has caught up.
	eventually(t, waitFor, func() error {
		va := &v1alpha1.VoiceAgent{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "drift"}, va); err != nil {
			return err
		}
		if va.Status.ObservedGeneration != va.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", va.Status.ObservedGeneration, va.Generation)
		}
		return nil
	})
	npDriftBefore := counterValue(t, "voiceagent_operator_drift_corrections_total", "kind", "NetworkPolicy")

	// Someone loosens the gateway's security context and removes the NetworkPolicy.
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
	if err := k8s.Patch(ctx, dep, patch, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, np); err != nil {
		t.Fatal(err)
	}
	// And edits the gateway's configuration and a Service's target port: the manager's cache
	// keeps a digest of these, not their content, and must still see the change.
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: render.ConfigMapName(&v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift"}})}, cm); err != nil {
		t.Fatal(err)
	}
	wantConfig := maps.Clone(cm.Data)
	cmPatch := client.MergeFrom(cm.DeepCopy())
	for k := range cm.Data {
		cm.Data[k] = "{}"
	}
	if err := k8s.Patch(ctx, cm, cmPatch, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "drift"}, svc); err != nil {
		t.Fatal(err)
	}
	wantPort := svc.Spec.Ports[0].TargetPort
	svcPatch := client.MergeFrom(svc.DeepCopy())
	svc.Spec.Ports[0].TargetPort = intstr.FromInt32(wantPort.IntVal + 1)
	if err := k8s.Patch(ctx, svc, svcPatch, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() error {
		got := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(cm), got); err != nil {
			return err
		}
		if !maps.Equal(got.Data, wantConfig) {
			return fmt.Errorf("gateway configuration not put back yet")
		}
		s := &corev1.Service{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(svc), s); err != nil {
			return err
		}
		if s.Spec.Ports[0].TargetPort != wantPort {
			return fmt.Errorf("service target port %s, want %s", s.Spec.Ports[0].TargetPort.String(), wantPort.String())
		}
		return nil
	})
	eventually(t, waitFor, func() error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(dep), d); err != nil {
			return err
		}
		if ro := d.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem; ro == nil || !*ro {
			return fmt.Errorf("readOnlyRootFilesystem still false")
		}
		return nil
	})
	eventually(t, waitFor, exists(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift"}}))

	// Both corrections are reported as drift, as Events and in the metric.
	eventually(t, waitFor, func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return err
		}
		var notes []string
		for _, e := range evs.Items {
			if e.Reason == "DriftCorrected" {
				notes = append(notes, e.Note)
			}
		}
		all := strings.Join(notes, "\n")
		if !strings.Contains(all, "Deployment drift") || !strings.Contains(all, "NetworkPolicy drift") {
			return fmt.Errorf("DriftCorrected events so far: %q", notes)
		}
		return nil
	})
	if got := counterValue(t, "voiceagent_operator_drift_corrections_total", "kind", "NetworkPolicy"); got < npDriftBefore+1 {
		t.Errorf("drift corrections for NetworkPolicy: %v, want at least %v", got, npDriftBefore+1)
	}
}

func TestRemovedFeaturesDeleteTheirChildren(t *testing.T) {
	ns := newNamespace(t)
	va := fullVoiceAgent(ns, "shrink")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	cert := unstructuredKey(render.CertificateGVK, ns, "shrink")
	esCRM := unstructuredKey(render.ExternalSecretGVK, ns, "shrink-integration-crm")
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shrink"}}
	for _, obj := range []client.Object{cert, esCRM, pdb} {
		eventually(t, waitFor, exists(obj))
	}
	eventually(t, waitFor, func() error {
		cur := getVA(t, ns, "shrink")
		cur.Spec.Encryption = nil
		cur.Spec.Integrations = cur.Spec.Integrations[1:]
		cur.Spec.Replicas = ptr.To[int32](1)
		return k8s.Update(ctx, cur)
	})
	for _, obj := range []client.Object{cert, esCRM, pdb} {
		eventually(t, waitFor, gone(obj))
	}
	eventually(t, waitFor, conditionIs(ns, "shrink", v1alpha1.ConditionCertificateReady, metav1.ConditionTrue, v1alpha1.ReasonTLSNotRequested))
	// TLS off: the inbound TLS role leaves the agent's pod with its certificate. (The
	// gateway's own certificate stays: it follows cert-manager, not the spec.)
	eventually(t, waitFor, func() error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shrink"}, d); err != nil {
			return err
		}
		if n := len(d.Spec.Template.Spec.InitContainers); n != 0 {
			return fmt.Errorf("%d init containers still in the agent pod", n)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == "tls" {
				return fmt.Errorf("the agent pod still mounts the Service's certificate")
			}
		}
		return nil
	})
	eventually(t, waitFor, exists(unstructuredKey(render.CertificateGVK, ns, "shrink-gateway")))
	// The gateway's PDB follows spec.gateway.replicas (2 by default), not the agent's.
	eventually(t, waitFor, exists(&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shrink-gateway"}}))
	// The model's ExternalSecret is still wanted.
	eventually(t, waitFor, exists(unstructuredKey(render.ExternalSecretGVK, ns, "shrink-model")))
}

func TestAuditSinkReferences(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "audited")
	va.Spec.Audit = &v1alpha1.AuditSpec{SinkRefs: []v1alpha1.LocalObjectReference{{Name: "soc"}}}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, conditionIs(ns, "audited", v1alpha1.ConditionAuditReady, metav1.ConditionFalse, v1alpha1.ReasonSinkNotFound))

	sink := &v1alpha1.AuditSink{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "soc"}, Spec: v1alpha1.AuditSinkSpec{
		Type: v1alpha1.AuditSinkWebhook, Webhook: &v1alpha1.WebhookSink{URL: "https://siem.example.com/ingest",
			Credentials: &v1alpha1.WebhookCredentials{BearerToken: &v1alpha1.CredentialSource{SecretRef: &v1alpha1.SecretKeyReference{Name: "siem", Key: "token"}}}},
	}}
	if err := k8s.Create(ctx, sink); err != nil {
		t.Fatal(err)
	}
	// The sink's token is missing: the sink is not Ready, nor is the agent's audit.
	eventually(t, waitFor, conditionIs(ns, "audited", v1alpha1.ConditionAuditReady, metav1.ConditionFalse, v1alpha1.ReasonSinkNotReady))
	createSecret(t, ns, "siem", "token", "x")
	eventually(t, waitFor, conditionIs(ns, "audited", v1alpha1.ConditionAuditReady, metav1.ConditionTrue, v1alpha1.ReasonSinksReady))
	eventually(t, waitFor, func() error {
		s := &v1alpha1.AuditSink{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(sink), s); err != nil {
			return err
		}
		if strings.Join(s.Status.UsedBy, ",") != "audited" {
			return fmt.Errorf("usedBy = %v", s.Status.UsedBy)
		}
		return nil
	})
	got := getVA(t, ns, "audited")
	if s := got.Status.Security; s == nil || strings.Join(s.AuditSinks, ",") != "soc" || !contains2(s.EgressAllowed, "siem.example.com:443") {
		t.Errorf("status.security = %+v", got.Status.Security)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "audited"}}
	gwDep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "audited-gateway"}}
	eventually(t, waitFor, exists(dep))
	eventually(t, waitFor, exists(gwDep))
	if !mountsVolume(gwDep.Spec.Template.Spec.Containers[0], "cred-sink-soc-bearer-token") || mountsVolume(dep.Spec.Template.Spec.Containers[0], "cred-sink-soc-bearer-token") {
		t.Error("the sink token must be mounted into the gateway only")
	}
}

func contains2(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func mountsVolume(c corev1.Container, name string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return true
		}
	}
	return false
}

func TestDeletingTheVoiceAgentLeavesOwnedChildrenToGC(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "bye")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bye"}}
	eventually(t, waitFor, exists(dep))
	if err := k8s.Delete(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, gone(va))
	// envtest runs no garbage collector (the kwok suite checks real deletion); what
	// matters here is that every child carries the controller reference GC follows.
	owner := dep.GetOwnerReferences()
	if len(owner) != 1 || owner[0].UID != va.UID || !ptr.Deref(owner[0].BlockOwnerDeletion, false) {
		t.Errorf("owner references %+v", owner)
	}
}

// TestInvalidSpecLocksTheAgentDown: a spec the API server admits but Render refuses (a
// budget too small to share between the gateway replicas) leaves no wider policy in
// force: the agent pods keep DNS and their gateway, and lose the rest until it is fixed.
func TestInvalidSpecLocksTheAgentDown(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	va := minimalVoiceAgent(ns, "locked")
	va.Spec.Network = &v1alpha1.NetworkSpec{AllowEgressTo: []v1alpha1.EgressRule{{To: []v1alpha1.EgressPeer{{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "cache"}}}}}}}
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	egressRules := func(want int) func() error {
		return func() error {
			np := &networkingv1.NetworkPolicy{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "locked"}, np); err != nil {
				return err
			}
			if n := len(np.Spec.Egress); n != want {
				return fmt.Errorf("%d egress rules, want %d", n, want)
			}
			return nil
		}
	}
	eventually(t, waitFor, egressRules(3)) // DNS, the gateway, the declared namespace
	eventually(t, waitFor, func() error {
		cur := getVA(t, ns, "locked")
		cur.Spec.CostLimits = &v1alpha1.CostLimits{DailyBudget: "0.000001"}
		return k8s.Update(ctx, cur)
	})
	eventually(t, waitFor, conditionIs(ns, "locked", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec))
	eventually(t, waitFor, egressRules(2)) // DNS and the gateway only
}

// A child whose managed-by label someone strips leaves the manager's cache (a delete
// there), is put back by a re-apply, and comes back to the cache as a create. The
// status the re-applying reconcile writes must be read from the apply's answer, status
// and all: an available Deployment stays Available, not "not created yet" until the
// next reconcile (or, were that create kept back as the operator's own write, for
// good: ownApplies keeps back only objects no other field manager wrote).
func TestStrippedLabelKeepsStatus(t *testing.T) {
	ns := newNamespace(t)
	createSecret(t, ns, "gemini-key", "api-key", "x")
	if err := k8s.Create(ctx, minimalVoiceAgent(ns, "stripped")); err != nil {
		t.Fatal(err)
	}
	markDeploymentAvailable(t, ns, "stripped")
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "stripped-gateway"}, dep); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(dep.DeepCopy())
	delete(dep.Labels, render.LabelManagedBy)
	if err := k8s.Patch(ctx, dep, patch, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	stripped := dep.ResourceVersion
	eventually(t, waitFor, func() error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(dep), d); err != nil {
			return err
		}
		if d.ResourceVersion == stripped || d.Labels[render.LabelManagedBy] != render.FieldOwner {
			return fmt.Errorf("managed-by label not put back yet")
		}
		return nil
	})
	// The reconcile that put it back reports it (before it writes status); then status
	// must stay Available: no later reconcile would correct a stale one here.
	eventually(t, waitFor, func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "DriftCorrected" && strings.Contains(e.Note, "Deployment stripped-gateway") {
				return nil
			}
		}
		return fmt.Errorf("no DriftCorrected event for the Deployment yet")
	})
	consistently(t, 2*time.Second, conditionIs(ns, "stripped", v1alpha1.ConditionAvailable, metav1.ConditionTrue, ""))
}
