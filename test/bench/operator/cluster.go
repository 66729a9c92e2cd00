package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cluster is a kwok cluster of its own (name and state folder), so that it never meets
// the demo's or the e2e suite's.
type cluster struct {
	bin, state, name string
	kubeconfig       string
	managerBin       string
	managerEnv       []string
	workloads        bool
}

func (c *cluster) env() []string {
	return append(os.Environ(), "KWOK_WORKDIR="+filepath.Join(c.state, "kwok"))
}

func (c *cluster) kwokctl(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kwokctl"), args...)
	cmd.Env = c.env()
	out, err := cmd.CombinedOutput()
	appendFile(filepath.Join(c.state, "kwokctl.log"), out)
	if err != nil {
		return fmt.Errorf("kwokctl %s: %w (see %s)", args[0]+" "+args[1], err, filepath.Join(c.state, "kwokctl.log"))
	}
	return nil
}

// up starts the cluster: the API server with a /16 Service range (kwokctl's default /24
// holds 254 Services, a bench of 1,000 VoiceAgents makes 2,000), kube-controller-manager
// with a client limit of 500 requests/s. Unless workloads is
// set, kube-controller-manager runs without its deployment and replicaset controllers:
// with client rate limits on, it turns 2,000 Deployments into pods at about 5 per
// second for many minutes, and their status changes would then be what the operator
// writes "at rest". The bench times the operator by its own children and status.
func (c *cluster) up(ctx context.Context, nodes int) error {
	c.kubeconfig = filepath.Join(c.state, "kubeconfig")
	cp := filepath.Join(c.bin, "controlplane")
	args := []string{"create", "cluster", "--name", c.name, "--runtime", "binary",
		"--kubeconfig", c.kubeconfig,
		"--etcd-binary", filepath.Join(cp, "etcd"),
		"--kube-apiserver-binary", filepath.Join(cp, "kube-apiserver"),
		"--kube-controller-manager-binary", filepath.Join(cp, "kube-controller-manager"),
		"--kube-scheduler-binary", filepath.Join(cp, "kube-scheduler"),
		"--kwok-controller-binary", filepath.Join(c.bin, "kwok"),
		"--extra-args", "kube-apiserver=service-cluster-ip-range=10.96.0.0/16",
		// kube-controller-manager keeps up with each phase (Endpoints and EndpointSlices
		// of its Services, the status of its PodDisruptionBudgets) instead of working
		// through one phase's objects during the next, at its default 20 requests/s.
		"--extra-args", "kube-controller-manager=kube-api-qps=500",
		"--extra-args", "kube-controller-manager=kube-api-burst=1000",
		"--wait", "2m"}
	if !c.workloads {
		args = append(args, "--extra-args", "kube-controller-manager=controllers=*,-deployment-controller,-replicaset-controller")
	}
	if err := c.kwokctl(ctx, args...); err != nil {
		return err
	}
	if nodes > 0 {
		return c.kwokctl(ctx, "scale", "node", "--replicas", strconv.Itoa(nodes), "--name", c.name)
	}
	return nil
}

func (c *cluster) down() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.kwokctl(ctx, "delete", "cluster", "--name", c.name); err != nil {
		fmt.Fprintln(os.Stderr, "tearing the cluster down:", err)
	}
}

func (c *cluster) kubectl(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "controlplane", "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// managerProc is one run of bin/voiceagent-operator manager.
type managerProc struct {
	cmd                 *exec.Cmd
	metricsURL, pprofAt string
	log                 string
	done                chan struct{}
}

// startManager starts a manager with leader election. It returns once the manager's
// VoiceAgent workers have started, or for a standby, once it waits for the Lease.
func startManager(ctx context.Context, c *cluster, run int, profile, standby bool, extra []string) (*managerProc, error) {
	metrics, probe := freePort(), freePort()
	m := &managerProc{metricsURL: "http://" + metrics + "/metrics", log: filepath.Join(c.state, fmt.Sprintf("manager-%d.log", run)), done: make(chan struct{})}
	args := []string{"manager", "--kubeconfig", c.kubeconfig, "--gateway-image", gatewayImage,
		"--metrics-bind-address", metrics, "--metrics-secure=false", "--health-probe-bind-address", probe,
		"--leader-elect", "--leader-election-namespace", leaseNamespace}
	if profile {
		m.pprofAt = freePort()
		args = append(args, "--pprof-bind-address", m.pprofAt)
	}
	args = append(args, extra...)
	f, err := os.Create(m.log)
	if err != nil {
		return nil, err
	}
	m.cmd = exec.Command(c.managerBin, args...)
	m.cmd.Stdout, m.cmd.Stderr = f, f
	m.cmd.Env = append(os.Environ(), c.managerEnv...)
	if err := m.cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	go func() { _ = m.cmd.Wait(); _ = f.Close(); close(m.done) }()
	ready := []string{`"Starting workers"`, `"controller":"voiceagent"`}
	if standby {
		ready = []string{"acquire leader lease"} // client-go's leaderelection: "Attempting to acquire leader lease..."
	}
	if err := m.waitLog(ctx, time.Minute, ready...); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

// waitLog waits until a line of the manager's log has all of want and its metrics
// endpoint answers.
func (m *managerProc) waitLog(ctx context.Context, within time.Duration, want ...string) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			return fmt.Errorf("the manager exited; see %s", m.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if logHas(m.log, want...) {
			if resp, err := http.Get(m.metricsURL); err == nil {
				_ = resp.Body.Close()
				return nil
			}
		}
	}
	return fmt.Errorf("the manager's log has no %q after %s; see %s", want, within, m.log)
}

func (m *managerProc) pid() int { return m.cmd.Process.Pid }

// stop sends SIGTERM and waits up to 20 s (then SIGKILL).
func (m *managerProc) stop() {
	if m == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

func logHas(path string, all ...string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		for _, s := range all {
			if !strings.Contains(sc.Text(), s) {
				continue next
			}
		}
		return true
	}
	return false
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

func appendFile(path string, b []byte) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	_, _ = f.Write(b)
	_ = f.Close()
}

// procStats reads a process's peak RSS (VmHWM, bytes) and CPU seconds (utime+stime).
func procStats(pid int) (hwm int64, cpu float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					kb, _ := strconv.ParseInt(f[1], 10, 64)
					hwm = kb * 1024
				}
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		// Fields after the command name (which may hold spaces) in parentheses.
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 13 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpu = (ut + st) / clockTicks
			}
		}
	}
	return hwm, cpu
}

// clusterCPU is the CPU seconds so far of each of the cluster's processes (those whose
// command line names its state folder: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kwok-controller), by binary name.
func clusterCPU(state string) map[string]float64 {
	out := map[string]float64{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmd), state) {
			continue
		}
		exe := filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0])
		if strings.HasPrefix(exe, "bench-operator") || strings.HasPrefix(exe, "voiceagent-operator") {
			continue
		}
		_, cpu := procStats(pid)
		out[exe] += cpu
	}
	return out
}

func cpuDelta(before, after map[string]float64) string {
	var parts []string
	var names []string
	for n := range after {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f s", n, after[n]-before[n]))
	}
	return strings.Join(parts, ", ")
}

// clockTicks is USER_HZ, 100 on Linux for every architecture this runs on.
const clockTicks = 100
