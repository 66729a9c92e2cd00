//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

const ready = 3 * time.Minute

func isReady(ns, name string) func() error {
	return func() error {
		va := &v1alpha1.VoiceAgent{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, va); err != nil {
			return err
		}
		c := meta.FindStatusCondition(va.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != va.Generation {
			var b strings.Builder
			for _, c := range va.Status.Conditions {
				fmt.Fprintf(&b, "%s=%s(%s: %s) ", c.Type, c.Status, c.Reason, c.Message)
			}
			return fmt.Errorf("%s/%s not Ready: %s", ns, name, b.String())
		}
		return nil
	}
}

// TestDemoVoiceAgentOnARealCluster applies the demo set and checks what a user checks.
func TestDemoVoiceAgentOnARealCluster(t *testing.T) {
	applyDir(t, filepath.Join(repoRoot, "config", "demo"))
	eventually(t, ready, isReady("demo", "support-line"))

	// Pods were created by the real ReplicaSet controller, admitted by Pod Security
	// "restricted" (the namespace enforces it) and run on kwok nodes.
	// Two workloads: 2 agent pods (the demo's spec.replicas) and 2 gateway pods (the
	// default spec.gateway.replicas).
	for _, w := range []struct {
		what   string
		labels map[string]string
	}{{"agent", render.SelectorLabels(&v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Name: "support-line"}})},
		{"gateway", render.GatewaySelectorLabels("support-line")}} {
		eventually(t, time.Minute, func() error {
			pods := &corev1.PodList{}
			if err := k8s.List(ctx, pods, client.InNamespace("demo"), client.MatchingLabels(w.labels)); err != nil {
				return err
			}
			running := 0
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
					running++
				}
			}
			if running != 2 {
				return fmt.Errorf("%d of 2 %s pods running", running, w.what)
			}
			return nil
		})
	}
	// The ExternalSecret was synced by the real External Secrets controller.
	es := get(t, render.ExternalSecretGVK, "demo", "support-line-model")
	if !conditionTrue(es, "Ready") {
		t.Errorf("ExternalSecret not Ready: %v", es.Object["status"])
	}
	// The Certificate was issued by the real cert-manager, and its expiry is in status.
	cert := get(t, render.CertificateGVK, "demo", "support-line")
	if !conditionTrue(cert, "Ready") {
		t.Errorf("Certificate not Ready: %v", cert.Object["status"])
	}
	va := &v1alpha1.VoiceAgent{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "support-line"}, va); err != nil {
		t.Fatal(err)
	}
	if s := va.Status.Security; s == nil || s.CertificateNotAfter == nil || time.Until(s.CertificateNotAfter.Time) < 24*time.Hour {
		t.Errorf("status.security.certificateNotAfter missing or wrong: %+v", va.Status.Security)
	}
	tls := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "support-line-tls"}, tls); err != nil {
		t.Errorf("TLS Secret: %v", err)
	}
	// The agent-to-gateway hop: the real cert-manager issued the VoiceAgent's own CA
	// and, with it, the gateway's serving certificate; ca.crt is the CA.
	gwCert := get(t, render.CertificateGVK, "demo", "support-line-gateway")
	if !conditionTrue(gwCert, "Ready") {
		t.Errorf("gateway Certificate not Ready: %v", gwCert.Object["status"])
	}
	if c := findCondition(va.Status.Conditions, v1alpha1.ConditionAgentTrafficEncrypted); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("AgentTrafficEncrypted: %+v", c)
	}
	if s := va.Status.Security; s == nil || s.AgentEgress != "gatewayOnly" || s.AgentToGateway != "tls" {
		t.Errorf("status.security: %+v", va.Status.Security)
	}
	gwTLS := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "support-line-gateway-tls"}, gwTLS); err != nil {
		t.Errorf("gateway TLS Secret: %v", err)
	} else if len(gwTLS.Data["ca.crt"]) == 0 || len(gwTLS.Data["tls.crt"]) == 0 {
		t.Errorf("gateway TLS Secret has keys %v, want ca.crt and tls.crt", keysOf(gwTLS.Data))
	}
}

func keysOf(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

func TestChildEditedOrDeletedIsPutBack(t *testing.T) {
	ns := namespace(t, "drift")
	va := simpleVoiceAgent(ns, "drift", 1)
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, ready, isReady(ns, "drift"))
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift"}}
	if err := k8s.Delete(ctx, np); err != nil {
		t.Fatal(err)
	}
	gwNP := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift-gateway"}}
	if err := k8s.Delete(ctx, gwNP); err != nil {
		t.Fatal(err)
	}
	// Either workload: the agent's and the gateway's.
	for _, dep := range []string{"drift", "drift-gateway"} {
		kubectl(t, "-n", ns, "patch", "deployment", dep, "--type=json",
			`-p=[{"op":"replace","path":"/spec/template/spec/automountServiceAccountToken","value":true}]`)
	}
	eventually(t, time.Minute, func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(np), np) })
	eventually(t, time.Minute, func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(gwNP), gwNP) })
	for _, dep := range []string{"drift", "drift-gateway"} {
		eventually(t, time.Minute, func() error {
			d := &appsv1.Deployment{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: dep}, d); err != nil {
				return err
			}
			if ptr.Deref(d.Spec.Template.Spec.AutomountServiceAccountToken, true) {
				return fmt.Errorf("%s: token automount still on", dep)
			}
			return nil
		})
	}
}

func TestDeletingTheVoiceAgentRemovesEveryChild(t *testing.T) {
	ns := namespace(t, "gc")
	va := simpleVoiceAgent(ns, "gone", 2)
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, ready, isReady(ns, "gone"))
	if err := k8s.Delete(ctx, va); err != nil {
		t.Fatal(err)
	}
	// The real garbage collector follows the owner references.
	eventually(t, 2*time.Minute, func() error {
		var left []string
		for _, l := range []client.ObjectList{&appsv1.DeploymentList{}, &corev1.ServiceList{}, &corev1.ConfigMapList{},
			&networkingv1.NetworkPolicyList{}, &corev1.PodList{}, &corev1.SecretList{}} {
			if err := k8s.List(ctx, l, client.InNamespace(ns), client.MatchingLabels{render.LabelVoiceAgent: "gone"}); err != nil {
				return err
			}
			items, _ := meta.ExtractList(l)
			for _, it := range items {
				left = append(left, fmt.Sprintf("%T %s", it, it.(client.Object).GetName()))
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("left behind: %v", left)
		}
		return nil
	})
}

// TestManagerKilledMidReconcile kills the manager while it works through 20 new
// VoiceAgents, starts it again, and checks that all converge with exactly one of each
// child and nothing orphaned.
func TestManagerKilledMidReconcile(t *testing.T) {
	ns := namespace(t, "crash")
	const n = 20
	for i := 0; i < n; i++ {
		if err := k8s.Create(ctx, simpleVoiceAgent(ns, "agent-"+strconv.Itoa(i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	// Kill it as soon as it has started on them.
	eventually(t, time.Minute, func() error {
		l := &appsv1.DeploymentList{}
		if err := k8s.List(ctx, l, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(l.Items) == 0 {
			return fmt.Errorf("no Deployment yet")
		}
		return nil
	})
	if out, err := demo("stop-manager"); err != nil {
		t.Fatalf("stop manager: %v %s", err, out)
	}
	if out, err := demo("start-manager"); err != nil {
		t.Fatalf("start manager: %v %s", err, out)
	}
	for i := 0; i < n; i++ {
		eventually(t, ready, isReady(ns, "agent-"+strconv.Itoa(i)))
	}
	deps := &appsv1.DeploymentList{}
	if err := k8s.List(ctx, deps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 2*n {
		t.Errorf("%d Deployments for %d VoiceAgents, want an agent and a gateway Deployment each", len(deps.Items), n)
	}
	secrets := &corev1.SecretList{}
	if err := k8s.List(ctx, secrets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	keys := 0
	for _, s := range secrets.Items {
		if strings.HasSuffix(s.Name, "-session-key") {
			keys++
			if len(s.OwnerReferences) != 1 {
				t.Errorf("session key %s has owners %v", s.Name, s.OwnerReferences)
			}
		}
	}
	if keys != n {
		t.Errorf("%d session keys for %d VoiceAgents", keys, n)
	}
}

// TestAPIServerRestartUnderTheManager kills kube-apiserver (SIGKILL) and starts it again with the
// same arguments; the manager, still the same process, reconnects and goes on
// reconciling. (Only the API server restarts: the rest of the control plane stays up,
// as in a rolling control-plane upgrade.)
func TestAPIServerRestartUnderTheManager(t *testing.T) {
	pidBefore := managerPID(t)
	restartAPIServer(t)
	ns := namespace(t, "restart")
	if err := k8s.Create(ctx, simpleVoiceAgent(ns, "after", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, ready, isReady(ns, "after"))
	if pid := managerPID(t); pid != pidBefore {
		t.Errorf("manager restarted: pid %s then %s", pidBefore, pid)
	}
}

// restartAPIServer kills the cluster's kube-apiserver, checks that it is gone, and
// starts it again from its own command line, writing its new pid where kwokctl looks
// for it (so that deleting the cluster still stops it).
func restartAPIServer(t *testing.T) {
	t.Helper()
	dir := filepath.Join(demoDir, "kwok", "clusters", "voiceagent-e2e")
	pidFile := filepath.Join(dir, "pids", "kube-apiserver.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	proc, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil { // a crash: no graceful drain
		t.Fatal(err)
	}
	eventually(t, time.Minute, func() error {
		if processRunning(pid) {
			return fmt.Errorf("kube-apiserver %d still running", pid)
		}
		return nil
	})
	if _, err := kubectlCmd("get", "--raw", "/readyz").CombinedOutput(); err == nil {
		t.Fatal("the API server still answers after it was stopped")
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "logs", "kube-apiserver.log"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }() // reap it when the cluster is deleted
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, func() error {
		out, err := kubectlCmd("get", "--raw", "/readyz").CombinedOutput()
		if err != nil {
			return fmt.Errorf("API server not ready again: %w %s", err, out)
		}
		return nil
	})
}

// TestRotationRollsAgentPods changes a value in the external store; External Secrets
// rotates the Secret, and because this credential is mounted into the agent (a
// database credential) the operator rolls the pods. Credentials mounted into the
// gateway are re-read by it without a roll.
func TestRotationRollsAgentPods(t *testing.T) {
	ns := namespace(t, "rotate")
	va := simpleVoiceAgent(ns, "rotating", 1)
	va.Spec.Integrations = []v1alpha1.Integration{{Name: "orders-db", Type: v1alpha1.IntegrationDatabase,
		Host: "orders-db.data.svc.cluster.local", Port: ptr.To[int32](5432),
		Credentials: &v1alpha1.CredentialSource{ExternalSecret: &v1alpha1.ExternalSecretSource{
			StoreRef:        v1alpha1.SecretStoreReference{Kind: v1alpha1.SecretStoreKindCluster, Name: "e2e-rotating-store"},
			RemoteRef:       v1alpha1.RemoteReference{Key: "db"},
			RefreshInterval: &metav1.Duration{Duration: 2 * time.Second},
		}}}}
	setStore(t, "e2e-rotating-store", "db", "first-password")
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, ready, isReady(ns, "rotating"))
	hash := func() string {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "rotating"}, d); err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Annotations[render.AnnotationRestartHash]
	}
	before := hash()
	setStore(t, "e2e-rotating-store", "db", "second-password")
	eventually(t, time.Minute, func() error {
		if h := hash(); h == before {
			return fmt.Errorf("restart hash unchanged %s", h)
		}
		return nil
	})
	eventually(t, ready, isReady(ns, "rotating"))

	// Rotating the agent token on request: a new token is announced to the gateways,
	// put in force two minutes later (the operator never reads the old one), and the
	// agent pods roll onto it.
	before = hash()
	kubectl(t, "-n", ns, "annotate", "voiceagent", "rotating", render.AnnotationRotateAgentToken+"=2026-12-02")
	eventually(t, 4*time.Minute, func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "rotating-agent-token"}, s); err != nil {
			return err
		}
		if got := s.Annotations[render.AnnotationRotateAgentToken]; got != "2026-12-02" {
			return fmt.Errorf("token Secret records rotation %q", got)
		}
		if h := hash(); h == before {
			return fmt.Errorf("restart hash unchanged %s", h)
		}
		return nil
	})
	eventually(t, ready, isReady(ns, "rotating"))
}

// TestRolloutNeverLeavesZeroReadyReplicas changes the spec so that both workloads
// roll (an env var for the agent pods, resources for the gateway pods) and watches both
// Deployments through the rollouts, run by the real Deployment controller: neither ever
// has zero ready replicas (maxUnavailable 0, a new pod ready before an old one goes).
func TestRolloutNeverLeavesZeroReadyReplicas(t *testing.T) {
	ns := namespace(t, "rollout")
	va := simpleVoiceAgent(ns, "rolling", 2)
	if err := k8s.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	eventually(t, ready, isReady(ns, "rolling"))
	w, err := k8sWatch.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	eventually(t, time.Minute, func() error {
		cur := &v1alpha1.VoiceAgent{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "rolling"}, cur); err != nil {
			return err
		}
		cur.Spec.Env = []v1alpha1.EnvVar{{Name: "GREETING", Value: "hello again"}}
		cur.Spec.Gateway = &v1alpha1.GatewaySpec{Replicas: ptr.To[int32](2), Resources: &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("60m"), corev1.ResourceMemory: resource.MustParse("64Mi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("64Mi")},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi"), corev1.ResourceEphemeralStorage: resource.MustParse("576Mi")},
		}}
		return k8s.Update(ctx, cur)
	})
	done := map[string]bool{}
	minReady := map[string]int32{"rolling": 2, "rolling-gateway": 2}
	rolled := map[string]bool{}
	deadline := time.After(3 * time.Minute)
	for len(done) < 2 {
		select {
		case ev := <-w.ResultChan():
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok {
				continue
			}
			if _, tracked := minReady[d.Name]; !tracked {
				continue
			}
			minReady[d.Name] = min(minReady[d.Name], d.Status.ReadyReplicas)
			if d.Status.UpdatedReplicas < d.Status.Replicas || d.Status.ObservedGeneration < d.Generation {
				rolled[d.Name] = true // a rollout is under way
			}
			if rolled[d.Name] && d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == 2 &&
				d.Status.Replicas == 2 && d.Status.ReadyReplicas == 2 {
				done[d.Name] = true
			}
		case <-deadline:
			t.Fatalf("rollouts not done in 3 minutes: done %v, rolled %v", done, rolled)
		}
	}
	for name, n := range minReady {
		if n < 1 {
			t.Errorf("Deployment %s had %d ready replicas during its rollout", name, n)
		}
	}
	t.Logf("fewest ready replicas during the rollouts: %v", minReady)
}

// helpers

func simpleVoiceAgent(ns, name string, replicas int32) *v1alpha1.VoiceAgent {
	return &v1alpha1.VoiceAgent{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.VoiceAgentSpec{
			Image:    "registry.example.com/acme/agent:1.0",
			Replicas: &replicas,
			Model: v1alpha1.ModelSpec{ModelTarget: v1alpha1.ModelTarget{
				Provider: v1alpha1.ProviderGemini, Name: "gemini-2.5-flash",
				Credentials: v1alpha1.CredentialSource{SecretRef: &v1alpha1.SecretKeyReference{Name: "gemini-key", Key: "api-key"}},
			}},
		},
	}
}

var nsSeq int

// namespace creates a namespace that enforces Pod Security "restricted", with the
// model key the simple VoiceAgents use.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	nsSeq++
	name := fmt.Sprintf("%s-%d", prefix, nsSeq)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "gemini-key"}, StringData: map[string]string{"api-key": "e2e-not-a-key"}}
	if err := k8s.Create(ctx, key); err != nil {
		t.Fatal(err)
	}
	return name
}

func applyDir(t *testing.T, dir string) {
	t.Helper()
	eventually(t, time.Minute, func() error {
		cmd := kubectlCmd("apply", "--server-side", "-f", dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
}

// get waits for an object of a third-party kind and returns it.
func get(t *testing.T, gvk schema.GroupVersionKind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	eventually(t, time.Minute, func() error { return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u) })
	return u
}

// setStore creates or updates a ClusterSecretStore of the External Secrets fake
// provider holding one key.
func setStore(t *testing.T, name, key, value string) {
	t.Helper()
	store := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"provider": map[string]any{"fake": map[string]any{
			"data": []any{map[string]any{"key": key, "value": value}},
		}}},
	}}
	if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(store), client.FieldOwner("e2e"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
}

func conditionTrue(u *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == "True" {
			return true
		}
	}
	return false
}

func managerPID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(demoDir, "manager.pid"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// processRunning is false once pid has exited, including as a zombie that its parent
// (kwokctl has gone, so init) has not reaped yet.
func processRunning(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	fields := strings.Fields(rest)
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}
