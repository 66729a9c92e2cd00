package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
)

// The suite runs one real kube-apiserver and etcd (built by hack/build-controlplane.sh)
// with our CRDs and the real CRDs of cert-manager and External Secrets, and one manager
// that authenticates as a user bound only to the generated ClusterRole: if the RBAC
// markers miss a permission, these tests fail.
var (
	suiteCfg    *rest.Config // admin
	k8s         client.Client
	operatorLog = &syncBuffer{}
	writes      atomic.Int64 // write requests the manager sent
	mgrClient   client.Client
	testImage   = "voiceagent-operator:test"
)

const operatorUser = "system:serviceaccount:voiceagent-system:voiceagent-operator"

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func repoPath(p ...string) string { return filepath.Join(append([]string{".."}, p...)...) }

// newEnvironment configures envtest with the binaries in bin/controlplane.
func newEnvironment(withThirdPartyCRDs bool) *envtest.Environment {
	paths := []string{repoPath("config", "crd", "bases")}
	if withThirdPartyCRDs {
		paths = append(paths, repoPath("bin", "crds", "cert-manager"), repoPath("bin", "crds", "external-secrets"), repoPath("bin", "crds", "keda"))
	}
	env := &envtest.Environment{CRDDirectoryPaths: paths, ErrorIfCRDPathMissing: true}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		env.BinaryAssetsDirectory = repoPath("bin", "controlplane")
	}
	return env
}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if _, err := os.Stat(repoPath("bin", "crds", "cert-manager")); err != nil {
		fmt.Fprintln(os.Stderr, "third-party CRDs missing: run `make test` (it runs hack/thirdparty-crds.sh and builds the control plane)")
		return 1
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(io.MultiWriter(operatorLog, os.Stderr)), zap.UseDevMode(true), zap.Level(zapcore.DebugLevel)))
	env := newEnvironment(true)
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest (run `make test`, which builds kube-apiserver and etcd):", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	suiteCfg = cfg
	k8s, err = client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opCfg, err := operatorConfig(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "operator user:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped, err := startManager(ctx, opCfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	cancel()
	<-stopped
	return code
}

// operatorConfig binds a fresh user to the ClusterRole that `make manifests` generates
// and returns a config that authenticates as that user, counting its write requests.
func operatorConfig(env *envtest.Environment) (*rest.Config, error) {
	cfg, err := operatorUserConfig(env, k8s)
	if err != nil {
		return nil, err
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt} })
	return cfg, nil
}

// operatorUserConfig binds the operator's user to the generated ClusterRole (through
// admin, a client of env) and returns a config that authenticates as that user.
func operatorUserConfig(env *envtest.Environment, admin client.Client) (*rest.Config, error) {
	role := &rbacv1.ClusterRole{}
	if err := readObject(repoPath("config", "rbac", "role.yaml"), role); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := admin.Create(ctx, role); err != nil {
		return nil, fmt.Errorf("create ClusterRole %s: %w", role.Name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "voiceagent-operator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: operatorUser}},
	}
	if err := admin.Create(ctx, binding); err != nil {
		return nil, fmt.Errorf("bind ClusterRole %s: %w", role.Name, err)
	}
	user, err := env.AddUser(envtest.User{Name: operatorUser}, nil)
	if err != nil {
		return nil, fmt.Errorf("add user %s: %w", operatorUser, err)
	}
	cfg := rest.CopyConfig(user.Config())
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, nil
}

// readObject decodes one YAML file of the repository strictly.
func readObject(path string, obj any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

type countingTransport struct{ next http.RoundTripper }

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		writes.Add(1)
	}
	return c.next.RoundTrip(req)
}

func startManager(ctx context.Context, cfg *rest.Config) (<-chan struct{}, error) {
	mgr, err := manager.New(cfg, manager.Options{MetricsAddr: "0", ProbeAddr: "0", GatewayImage: testImage,
		AuditPollInterval: 500 * time.Millisecond, SpendInterval: 500 * time.Millisecond, AgentTokenSettle: time.Second})
	if err != nil {
		return nil, err
	}
	mgrClient = mgr.GetClient()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped:", err)
		}
	}()
	return done, nil
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %v", timeout, last)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// consistently polls check for the whole window and fails on the first error: what
// must stay true after the event that could break it has been seen.
func consistently(t *testing.T, window time.Duration, check func() error) {
	t.Helper()
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err := check(); err != nil {
			t.Fatalf("stopped being true within %s: %v", window, err)
		}
	}
}

var nsCounter atomic.Int64

// newNamespace creates a namespace for one test, labelled to enforce Pod Security
// Standards "restricted".
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%100000, nsCounter.Add(1))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
	}}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}
