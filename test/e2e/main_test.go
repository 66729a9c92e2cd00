//go:build e2e

// Package e2e drives a whole installation like a user: a kwok cluster with the real
// kube-controller-manager (ReplicaSets, garbage collector), Pod Security admission, the
// real External Secrets and cert-manager controllers, and our manager as a process.
// `make test-e2e` runs it; hack/demo.sh brings the cluster up and down.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
)

var (
	k8s      client.Client
	k8sWatch client.WithWatch
	demoDir  string
	repoRoot = filepath.Join("..", "..")
	ctx      = context.Background()
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "voiceagent-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	demoDir = dir
	defer func() {
		if out, err := demo("down"); err != nil {
			fmt.Fprintf(os.Stderr, "tearing the cluster down: %v\n%s\n", err, out)
		}
	}()
	if out, err := demo("up", "--no-samples"); err != nil {
		fmt.Fprintf(os.Stderr, "cluster did not come up: %v\n%s\n", err, out)
		return 1
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(demoDir, "kubeconfig"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.QPS, cfg.Burst = 100, 200
	k8s, err = client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if k8sWatch, err = client.NewWithWatch(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// demo runs hack/demo.sh with this suite's state folder and cluster name.
func demo(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "demo.sh"), args...)
	cmd.Env = append(os.Environ(), "DEMO_DIR="+demoDir, "DEMO_CLUSTER=voiceagent-e2e")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func kubectlCmd(args ...string) *exec.Cmd {
	return exec.Command(filepath.Join(repoRoot, "bin", "controlplane", "kubectl"),
		append([]string{"--kubeconfig", filepath.Join(demoDir, "kubeconfig")}, args...)...)
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlCmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %v", timeout, err)
		}
		time.Sleep(250 * time.Millisecond) // polling interval, not synchronisation
	}
}
