package controllers_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
)

// TestMetricsEndpointIsAuthenticatedAndAuthorized starts a second manager the way the
// chart runs it (--metrics-secure: HTTPS, TokenReview and SubjectAccessReview), against
// an API server of its own and as a user bound only to the generated ClusterRole (which
// must therefore let it create both reviews), while the suite's manager keeps running in
// this process. A scrape without a token is refused (401), one with the token of a
// ServiceAccount not bound to the metrics-reader ClusterRole (403) and a made-up one
// too, one bound to it
// is served (200), over TLS only; and the VoiceAgent counts come from this manager's
// cluster, not from the manager that registered the metrics first. Once it stops, the
// collector reads the suite's manager again.
func TestMetricsEndpointIsAuthenticatedAndAuthorized(t *testing.T) {
	env := newEnvironment(false)
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	admin, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	opCfg, err := operatorUserConfig(env, admin)
	if err != nil {
		t.Fatal(err)
	}
	reader := &rbacv1.ClusterRole{}
	if err := readObject(repoPath("config", "rbac", "metrics_reader_role.yaml"), reader); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, reader); err != nil {
		t.Fatal(err)
	}
	scraper := serviceAccountToken(t, admin, "scraper")
	stranger := serviceAccountToken(t, admin, "stranger")
	if err := admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "scraper-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "scraper", Namespace: "default"}},
	}); err != nil {
		t.Fatal(err)
	}

	// As many VoiceAgents here as the suite's cluster has not.
	suiteCount := len(listVoiceAgents(t, k8s))
	want := 1
	if suiteCount == want {
		want = 2
	}
	for i := range want {
		if err := admin.Create(ctx, minimalVoiceAgent("default", "metrics-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}

	addr := freeAddress(t)
	mgr, err := manager.New(opCfg, manager.Options{MetricsAddr: addr, MetricsSecure: true, ProbeAddr: "0",
		GatewayImage: testImage, SkipNameValidation: true})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		}
	}
	defer stop()

	url := "https://" + addr + "/metrics"
	// The certificate is self-signed (no --metrics-cert-path), as the chart's
	// ServiceMonitor assumes unless it is given a CA.
	https := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	eventually(t, waitFor, func() error { return expectStatus(https, url, "", http.StatusUnauthorized) })
	// A token the API server does not recognise: its TokenReview fails, which
	// controller-runtime's filter answers with 500; what matters is that nothing is served.
	if code, body, err := get(https, url, "not-a-token"); err != nil || code == http.StatusOK {
		t.Errorf("a made-up token: %d %v: %.200s", code, err, body)
	}
	if err := expectStatus(https, url, stranger, http.StatusForbidden); err != nil {
		t.Error(err)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + addr + "/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP was served: %s", body)
		}
	}
	eventually(t, waitFor, func() error {
		body, err := scrape(https, url, scraper)
		if err != nil {
			return err
		}
		if !strings.Contains(body, "controller_runtime_reconcile_total") {
			return fmt.Errorf("no controller-runtime metrics in:\n%s", body)
		}
		if got := readyCount(body); got != want {
			return fmt.Errorf("voiceagent_operator_voiceagents counts %d VoiceAgents with a Ready series, want this cluster's %d (the suite's has %d)", got, want, suiteCount)
		}
		return nil
	})

	stop()
	eventually(t, waitFor, func() error {
		families, err := crmetrics.Registry.Gather()
		if err != nil {
			return err
		}
		var b strings.Builder
		for _, f := range families {
			if f.GetName() != "voiceagent_operator_voiceagents" {
				continue
			}
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				fmt.Fprintf(&b, "voiceagent_operator_voiceagents{condition=%q,status=%q} %g\n", labels["condition"], labels["status"], m.GetGauge().GetValue())
			}
		}
		if got, want := readyCount(b.String()), len(listVoiceAgents(t, k8s)); got != want {
			return fmt.Errorf("after the second manager stopped, %d VoiceAgents counted, want the suite's %d", got, want)
		}
		return nil
	})
}

func listVoiceAgents(t *testing.T, c client.Client) []v1alpha1.VoiceAgent {
	t.Helper()
	list := &v1alpha1.VoiceAgentList{}
	if err := c.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// serviceAccountToken creates a ServiceAccount in default and returns a token the API
// server issues for it (TokenRequest), as the kubelet projects into Prometheus' pod.
func serviceAccountToken(t *testing.T, admin client.Client, name string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
	if err := admin.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if err := admin.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(c *http.Client, url, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func expectStatus(c *http.Client, url, token string, want int) error {
	code, body, err := get(c, url, token)
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("GET %s with token %q: %d, want %d: %.200s", url, token, code, want, body)
	}
	return nil
}

func scrape(c *http.Client, url, token string) (string, error) {
	code, body, err := get(c, url, token)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("scrape: %d: %.200s", code, body)
	}
	return body, nil
}

// readyCount sums voiceagent_operator_voiceagents{condition="Ready"} over its statuses:
// the number of VoiceAgents the collector saw.
func readyCount(exposition string) int {
	n := 0
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, "voiceagent_operator_voiceagents{") || !strings.Contains(line, `condition="Ready"`) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			n += int(v)
		}
	}
	return n
}
