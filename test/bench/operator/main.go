// Command operator-bench measures the operator at N VoiceAgents on a kwok cluster of its
// own (real kube-apiserver, etcd, kube-controller-manager; simulated nodes), against a
// plain client that creates the same objects directly:
//
//	make bench-operator              # N=1000
//	N=200 make bench-operator        # a quick run
//	go run ./test/bench/operator -n 200 -manager-args "--max-concurrent-reconciles=1"
//
// One run, in this order: a plain client of 16 workers creates every child of N
// VoiceAgents (rendered by internal/render, the same count and kinds) in a namespace of
// its own: the bound the API server allows. Then the manager (bin/voiceagent-operator)
// starts, the bench creates N VoiceAgents with 16 workers, and times until every
// VoiceAgent's children exist and its status is written for its generation. Then: the
// writes at rest over 30 s; a spec change (the daily budget) applied to all N, timed
// until every gateway ConfigMap carries it; the manager restarted, and its writes in the
// 60 s after. Requests come from the API server's own apiserver_request_total (the
// resources the operator touches, less the bench's own requests) and, as a check, from
// the manager's client-side rest_client_requests_total; RSS (VmHWM) and CPU seconds from
// /proc; reconcile p50/p99 from controller_runtime_reconcile_time_seconds. The cluster
// is deleted at the end, on failure and on Ctrl-C.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

const (
	benchNS = "bench"
	plainNS = "bench-plain"
	applyNS = "bench-plain-apply"
)

type config struct {
	n, workers     int
	bin, state     string
	managerBin     string
	managerEnv     string
	clusterName    string
	managerArgs    []string
	profileDir     string
	profileSeconds int
	rest, restart  time.Duration
	timeout        time.Duration
	specTimeout    time.Duration
	workloads      bool
	plainApply     bool
	keep           bool
	label, out     string
}

func main() {
	cfg := config{}
	defN := 1000
	if v, err := strconv.Atoi(os.Getenv("N")); err == nil && v > 0 {
		defN = v
	}
	flag.IntVar(&cfg.n, "n", defN, "VoiceAgents (env N)")
	flag.IntVar(&cfg.workers, "workers", 16, "workers of the plain client and of the bench's VoiceAgent creates and patches")
	flag.StringVar(&cfg.bin, "bin", "bin", "folder of kwokctl, kwok, controlplane/ and voiceagent-operator")
	flag.StringVar(&cfg.managerBin, "manager-bin", "", "the manager binary; default <bin>/voiceagent-operator (another build, to compare)")
	flag.StringVar(&cfg.state, "state", "", "state folder (kwok's, logs, profiles); default: a new temporary folder, removed at the end unless -keep")
	flag.StringVar(&cfg.clusterName, "cluster", "voiceagent-bench-operator", "kwok cluster name")
	flag.StringVar(&cfg.managerEnv, "manager-env", os.Getenv("MANAGER_ENV"), "extra environment of the manager, space-separated NAME=value (env MANAGER_ENV), e.g. GODEBUG=gctrace=1")
	managerArgs := flag.String("manager-args", os.Getenv("MANAGER_ARGS"), "extra flags of the manager, space-separated (env MANAGER_ARGS)")
	flag.StringVar(&cfg.profileDir, "profile", os.Getenv("PROFILE"), "folder to write the manager's CPU profile (first -profile-seconds of the create phase) and heap profile (at convergence) into (env PROFILE)")
	flag.IntVar(&cfg.profileSeconds, "profile-seconds", 20, "length of the CPU profile")
	flag.DurationVar(&cfg.rest, "rest", 30*time.Second, "how long writes at rest are counted")
	flag.DurationVar(&cfg.restart, "restart-window", 60*time.Second, "how long writes after a manager restart are counted")
	flag.DurationVar(&cfg.timeout, "timeout", 15*time.Minute, "the longest any phase may take")
	flag.DurationVar(&cfg.specTimeout, "spec-timeout", 0, "the longest the spec change may take; default -timeout")
	flag.BoolVar(&cfg.workloads, "workloads", false, "keep kube-controller-manager's deployment and replicaset controllers (pods on kwok nodes); off by default, see cluster.up")
	flag.BoolVar(&cfg.plainApply, "plain-apply", true, "also time the plain client with server-side apply instead of create (a second bound, for the operator's kind of request)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the state folder (logs) at the end; the cluster is deleted anyway")
	flag.StringVar(&cfg.label, "label", os.Getenv("LABEL"), "a name for this run in the table (env LABEL)")
	flag.StringVar(&cfg.out, "out", os.Getenv("OUT"), "append the results as one JSON line to this file (env OUT)")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	cfg.managerArgs = strings.Fields(*managerArgs)
	if cfg.specTimeout == 0 {
		cfg.specTimeout = cfg.timeout
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench-operator:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "== %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// results are the figures of one run.
type results struct {
	Label             string             `json:"label,omitempty"`
	N                 int                `json:"n"`
	Children          int                `json:"childrenPerAgent"`
	ManagerArgs       []string           `json:"managerArgs,omitempty"`
	PlainSeconds      float64            `json:"plainSeconds"`
	PlainRequests     map[string]float64 `json:"plainRequestsPerAgent"`
	PlainApplySeconds float64            `json:"plainApplySeconds,omitempty"`
	OperatorSeconds   float64            `json:"operatorSeconds"`
	ChildrenSeconds   float64            `json:"childrenSeconds"`
	CreateVerbs       map[string]float64 `json:"createRequestsPerAgent"`
	CreateEvents      float64            `json:"createEventsPerAgent"`
	CreateClient      float64            `json:"createClientRequestsPerAgent"`
	CreateReconcile   float64            `json:"createReconcilesPerAgent"`
	P50               float64            `json:"reconcileP50Seconds"`
	P99               float64            `json:"reconcileP99Seconds"`
	CreateCPU         float64            `json:"createCPUSeconds"`
	RestWrites        float64            `json:"restWrites"`
	RestClient        float64            `json:"restClientWrites"`
	RestReconciles    float64            `json:"restReconciles"`
	SpecSeconds       float64            `json:"specConfigSeconds"`
	SpecStatus        float64            `json:"specStatusSeconds"`
	SpecVerbs         map[string]float64 `json:"specRequestsPerAgent"`
	SpecEvents        float64            `json:"specEventsPerAgent"`
	SpecReconcile     float64            `json:"specReconcilesPerAgent"`
	RestartWrites     float64            `json:"restartWrites"`
	RestartClient     float64            `json:"restartClientWrites"`
	RestartGets       float64            `json:"restartClientGets"`
	RestartPuts       float64            `json:"restartClientPuts"`
	RestartLease      float64            `json:"restartLeaseWrites"`
	HandOverSeconds   float64            `json:"handOverSeconds"`
	PeakRSS           int64              `json:"peakRSSBytes"`
	RestartRSS        int64              `json:"restartPeakRSSBytes"`
	TotalCPU          float64            `json:"firstManagerCPUSeconds"`
	RestWindow        float64            `json:"restWindowSeconds"`
	RestartWindow     float64            `json:"restartWindowSeconds"`
}

func run(cfg config) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.bin, err = filepath.Abs(cfg.bin); err != nil {
		return err
	}
	for _, b := range []string{"kwokctl", "kwok", "voiceagent-operator", "controlplane/kube-apiserver", "controlplane/etcd", "controlplane/kubectl"} {
		if _, err := os.Stat(filepath.Join(cfg.bin, b)); err != nil {
			return fmt.Errorf("%s is missing: make bench-operator builds it", filepath.Join(cfg.bin, b))
		}
	}
	if cfg.state == "" {
		if cfg.state, err = os.MkdirTemp("", "voiceagent-bench-operator-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.state, 0o755); err != nil {
		return err
	}
	if cfg.profileDir != "" {
		if cfg.profileDir, err = filepath.Abs(cfg.profileDir); err != nil {
			return err
		}
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
	}
	if cfg.managerBin == "" {
		cfg.managerBin = filepath.Join(cfg.bin, "voiceagent-operator")
	}
	if cfg.managerBin, err = filepath.Abs(cfg.managerBin); err != nil {
		return err
	}
	cl := &cluster{bin: cfg.bin, state: cfg.state, name: cfg.clusterName, workloads: cfg.workloads, managerBin: cfg.managerBin,
		managerEnv: strings.Fields(cfg.managerEnv)}
	var mgr *managerProc
	defer func() {
		mgr.stop()
		logf("deleting cluster %s", cl.name)
		cl.down()
		if err != nil || cfg.keep {
			fmt.Fprintf(os.Stderr, "logs kept in %s\n", cfg.state)
		} else {
			_ = os.RemoveAll(cfg.state)
		}
	}()

	nodes := 0
	if cfg.workloads {
		nodes = cfg.n*6/100 + 1 // 2 agent + 2 gateway pods per VoiceAgent, 110 per node
	}
	logf("creating kwok cluster %s (state %s)", cl.name, cfg.state)
	if err := cl.up(ctx, nodes); err != nil {
		return err
	}
	if err := cl.kubectl(ctx, "apply", "--server-side", "-f", "config/crd/bases"); err != nil {
		return err
	}
	if err := cl.kubectl(ctx, "wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cl.kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS = -1 // no client-side limit, as controller-runtime's default
	k8s, err := client.New(rc, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	raw := cs.CoreV1().RESTClient()
	for _, ns := range []string{benchNS, plainNS, applyNS} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
		for name, key := range referencedSecrets {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: map[string]string{key: "bench-" + name}}
			if err := k8s.Create(ctx, s); err != nil {
				return err
			}
		}
	}
	res := results{Label: cfg.label, N: cfg.n, ManagerArgs: cfg.managerArgs,
		RestWindow: cfg.rest.Seconds(), RestartWindow: cfg.restart.Seconds()}

	// The bench's view of both namespaces: informers, read without requests.
	scheme := manager.Scheme()
	benchCache, err := cache.New(rc, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{benchNS: {}, plainNS: {}, applyNS: {}}})
	if err != nil {
		return err
	}
	w, err := newWatcher(ctx, benchCache, scheme)
	if err != nil {
		return err
	}
	go func() { _ = benchCache.Start(ctx) }()
	if !benchCache.WaitForCacheSync(ctx) {
		return fmt.Errorf("the bench's cache did not sync")
	}

	// The bound: the same objects, created directly.
	template := newAgent(plainNS, agentName(0))
	if err := k8s.Create(ctx, template, client.DryRunAll); err != nil {
		return fmt.Errorf("dry-run create of the template VoiceAgent: %w", err)
	}
	objs, err := childObjects(template)
	if err != nil {
		return err
	}
	res.Children = len(objs)
	if err := settleLogged(ctx, raw, "before the plain client"); err != nil {
		return err
	}
	logf("plain client: %d workers create %d objects for each of %d VoiceAgents", cfg.workers, res.Children, cfg.n)
	before, err := apiserverRequests(ctx, raw)
	if err != nil {
		return err
	}
	cpuBefore := clusterCPU(cfg.state)
	apiProfile := profileAPIServer(ctx, raw, cfg, "apiserver-plain.pprof")
	d, created, err := plainClient(ctx, k8s, template, plainNS, cfg.n, cfg.workers, false)
	if err := apiProfile(); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("plain client: %w", err)
	}
	after, err := apiserverRequests(ctx, raw)
	if err != nil {
		return err
	}
	res.PlainSeconds = d.Seconds()
	res.PlainRequests, _ = byVerb(before, after, nil)
	logf("plain client: the API server's mean latency: %s", meanLatency(before, after))
	logf("plain client: %d objects in %.1fs; CPU of the cluster: %s", created, d.Seconds(), cpuDelta(cpuBefore, clusterCPU(cfg.state)))
	if cfg.plainApply {
		if err := settleLogged(ctx, raw, "before the plain client with server-side apply"); err != nil {
			return err
		}
		if err := clearLogged(ctx, k8s, raw, plainNS, cfg.workers); err != nil {
			return err
		}
		logf("plain client, server-side apply: %d workers apply the same objects in namespace %s", cfg.workers, applyNS)
		if before, err = apiserverRequests(ctx, raw); err != nil {
			return err
		}
		cpuBefore = clusterCPU(cfg.state)
		// The same window of the API server's CPU as the operator phase's profile: the
		// two side by side say what the operator's requests cost beyond plain applies.
		applyProfile := profileAPIServer(ctx, raw, cfg, "apiserver-plain-apply.pprof")
		d, created, err := plainClient(ctx, k8s, template, applyNS, cfg.n, cfg.workers, true)
		if err := applyProfile(); err != nil {
			return err
		}
		if err != nil {
			return fmt.Errorf("plain client, server-side apply: %w", err)
		}
		if after, err = apiserverRequests(ctx, raw); err != nil {
			return err
		}
		res.PlainApplySeconds = d.Seconds()
		logf("plain client, server-side apply: the API server's mean latency: %s", meanLatency(before, after))
		logf("plain client, server-side apply: %d objects in %.1fs; CPU of the cluster: %s", created, d.Seconds(), cpuDelta(cpuBefore, clusterCPU(cfg.state)))
	}

	// What the plain clients made goes (clearPlain), their generated Secrets too: the
	// manager caches the metadata of every Secret in the cluster, and would otherwise
	// start with three times the bench's own.
	for _, ns := range []string{plainNS, applyNS} {
		if err := clearLogged(ctx, k8s, raw, ns, cfg.workers); err != nil {
			return err
		}
	}
	if err := settleLogged(ctx, raw, "before the manager starts"); err != nil {
		return err
	}
	logf("starting the manager %v", cfg.managerArgs)
	leases := watchLease(ctx, cs)
	if mgr, err = startManager(ctx, cl, 1, cfg.profileDir != "", false, cfg.managerArgs); err != nil {
		return err
	}
	mBefore, err := scrapeManager(mgr.metricsURL)
	if err != nil {
		return err
	}
	rss0, cpu0 := procStats(mgr.pid())
	logf("manager started: peak RSS so far %.0f MiB; %s", float64(rss0)/(1<<20), mBefore.memory())
	if before, err = apiserverRequests(ctx, raw); err != nil {
		return err
	}
	var cpuProfile chan error
	if cfg.profileDir != "" {
		cpuProfile = make(chan error, 1)
		go func() {
			cpuProfile <- fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", mgr.pprofAt, cfg.profileSeconds),
				filepath.Join(cfg.profileDir, "cpu.pprof"))
		}()
	}
	apiProfile = profileAPIServer(ctx, raw, cfg, "apiserver-operator.pprof")
	logf("operator: %d workers create %d VoiceAgents", cfg.workers, cfg.n)
	cpuBefore = clusterCPU(cfg.state)
	t0 := time.Now()
	err = runWorkers(ctx, cfg.n, cfg.workers, func(ctx context.Context, i int) error {
		va := newAgent(benchNS, agentName(i))
		if err := k8s.Create(ctx, va); err != nil {
			return err
		}
		objs, err := childObjects(va)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(objs))
		for _, o := range objs {
			keys = append(keys, childKey(o))
		}
		w.expect(va.Name, keys)
		return nil
	})
	if err != nil {
		return fmt.Errorf("create VoiceAgents: %w", err)
	}
	created1 := time.Now()
	var childrenAt time.Time
	tEnd, err := w.waitFor(ctx, cfg.timeout, func() bool {
		ch, st, _ := w.pending(nil, nil)
		if ch == 0 && childrenAt.IsZero() {
			childrenAt = time.Now()
		}
		return ch == 0 && st == 0
	})
	if err != nil {
		ch, st, _ := w.pending(nil, nil)
		return fmt.Errorf("operator: %w (%d VoiceAgents without all children, %d without status)", err, ch, st)
	}
	res.OperatorSeconds = tEnd.Sub(t0).Seconds()
	res.ChildrenSeconds = childrenAt.Sub(t0).Seconds()
	logf("operator: converged in %.1fs (creates done after %.1fs, children after %.1fs); CPU of the cluster: %s", res.OperatorSeconds, created1.Sub(t0).Seconds(), res.ChildrenSeconds, cpuDelta(cpuBefore, clusterCPU(cfg.state)))
	// Requests still in flight for the last agents (a second status read, events) land
	// within a moment; the window closes 2 s after convergence.
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	if after, err = apiserverRequests(ctx, raw); err != nil {
		return err
	}
	mAfter, err := scrapeManager(mgr.metricsURL)
	if err != nil {
		return err
	}
	rss1, cpu1 := procStats(mgr.pid())
	logf("operator: peak RSS so far %.0f MiB; %s", float64(rss1)/(1<<20), mAfter.memory())
	own := map[reqKey]float64{{verb: "CREATE", group: "voiceagent.dev", resource: "voiceagents"}: float64(cfg.n)}
	res.CreateVerbs, res.CreateEvents = byVerb(before, after, own)
	logf("operator: writes of any client while converging: %s", describeWrites(before, after))
	logf("operator: requests on the operator's resources (the bench's own included): %s", describeOperator(before, after))
	logf("operator: the API server's mean latency: %s", meanLatency(before, after))
	delta := mAfter.minus(mBefore)
	res.CreateClient = delta.clientTotal() / float64(cfg.n)
	res.CreateReconcile = delta.reconciles / float64(cfg.n)
	res.P50, res.P99 = delta.quantile(0.5), delta.quantile(0.99)
	res.CreateCPU = cpu1 - cpu0
	if cfg.profileDir != "" {
		if err := fetch(fmt.Sprintf("http://%s/debug/pprof/heap", mgr.pprofAt), filepath.Join(cfg.profileDir, "heap.pprof")); err != nil {
			return err
		}
	}

	// At rest.
	logf("at rest: counting writes for %s", cfg.rest)
	if err := apiProfile(); err != nil {
		return err
	}
	mBefore = mAfter
	before = after
	if err := sleep(ctx, cfg.rest); err != nil {
		return err
	}
	if after, err = apiserverRequests(ctx, raw); err != nil {
		return err
	}
	if mAfter, err = scrapeManager(mgr.metricsURL); err != nil {
		return err
	}
	verbs, events := byVerb(before, after, nil)
	res.RestWrites = sumWrites(verbs) + events
	res.RestClient = mAfter.minus(mBefore).clientWrites()
	res.RestReconciles = mAfter.minus(mBefore).reconciles
	logf("at rest: %.0f writes at the API server, %.0f by the manager's client, %.0f reconciles; all writes of any client: %s",
		res.RestWrites, res.RestClient, res.RestReconciles, describeWrites(before, after))

	// A spec change to all N: a new daily budget.
	logf("spec change: %d workers patch spec.costLimits.dailyBudget of every VoiceAgent", cfg.workers)
	mBefore = mAfter
	before = after
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	minGen := map[string]int64{}
	wantCM := map[string]map[string]string{}
	t0 = time.Now()
	err = runWorkers(ctx, cfg.n, cfg.workers, func(ctx context.Context, i int) error {
		va := &v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: agentName(i)}}
		patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"costLimits":{"dailyBudget":"30.00"}}}`))
		if err := k8s.Patch(ctx, va, patch); err != nil {
			return err
		}
		ch, err := render.Render(va, renderInputs())
		if err != nil {
			return err
		}
		<-mu
		minGen[va.Name], wantCM[va.Name] = va.Generation, ch.ConfigMap.Data
		mu <- struct{}{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spec change: %w", err)
	}
	var configAt time.Time
	tEnd, err = w.waitFor(ctx, cfg.specTimeout, func() bool {
		_, st, cms := w.pending(minGen, wantCM)
		if cms == 0 && configAt.IsZero() {
			configAt = time.Now()
		}
		return cms == 0 && st == 0
	})
	if err != nil {
		_, st, cms := w.pending(minGen, wantCM)
		return fmt.Errorf("spec change: %w (%d gateway ConfigMaps without the new budget, %d statuses behind)\n%s", err, cms, st, w.firstConfigDiff(wantCM))
	}
	res.SpecSeconds = configAt.Sub(t0).Seconds()
	res.SpecStatus = tEnd.Sub(t0).Seconds()
	logf("spec change: every gateway ConfigMap after %.1fs, every status after %.1fs", res.SpecSeconds, res.SpecStatus)
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	if after, err = apiserverRequests(ctx, raw); err != nil {
		return err
	}
	if mAfter, err = scrapeManager(mgr.metricsURL); err != nil {
		return err
	}
	own = map[reqKey]float64{{verb: "PATCH", group: "voiceagent.dev", resource: "voiceagents"}: float64(cfg.n)}
	res.SpecVerbs, res.SpecEvents = byVerb(before, after, own)
	logf("spec change: requests on the operator's resources (the bench's own included): %s", describeOperator(before, after))
	logf("spec change: the API server's mean latency: %s", meanLatency(before, after))
	res.SpecReconcile = mAfter.minus(mBefore).reconciles / float64(cfg.n)
	res.PeakRSS, res.TotalCPU = procStats(mgr.pid())

	// A hand-over, as a rolling update of the operator makes one: a second manager starts
	// as a standby (its caches fill while it waits for the Lease), the leader is stopped
	// (SIGTERM: it steps down and releases the Lease), and the standby takes over N
	// converged VoiceAgents.
	logf("restart: a standby manager, then the leader stopped; counting writes for %s", cfg.restart)
	standby, err := startManager(ctx, cl, 2, cfg.profileDir != "", true, cfg.managerArgs)
	if err != nil {
		return err
	}
	if before, err = apiserverRequests(ctx, raw); err != nil {
		standby.stop()
		return err
	}
	t0 = time.Now()
	mgr.stop()
	mgr = standby
	if mBefore, err = scrapeManager(mgr.metricsURL); err != nil {
		return err
	}
	lease0 := leases.count()
	if err := mgr.waitLog(ctx, time.Minute, `"Starting workers"`, `"controller":"voiceagent"`); err != nil {
		return err
	}
	res.HandOverSeconds = time.Since(t0).Seconds()
	logf("restart: the standby started its workers %.1fs after the leader was stopped", res.HandOverSeconds)
	if err := sleep(ctx, cfg.restart-time.Since(t0)); err != nil {
		return err
	}
	if after, err = apiserverRequests(ctx, raw); err != nil {
		return err
	}
	if mAfter, err = scrapeManager(mgr.metricsURL); err != nil {
		return err
	}
	verbs, events = byVerb(before, after, nil)
	res.RestartWrites = sumWrites(verbs) + events
	delta = mAfter.minus(mBefore)
	res.RestartClient = delta.clientWrites()
	res.RestartGets = delta.clientRequests["GET"]
	res.RestartPuts, res.RestartLease = delta.clientPuts(), leases.count()-lease0
	res.RestartRSS, _ = procStats(mgr.pid())
	logf("restart: peak RSS %.0f MiB; %s", float64(res.RestartRSS)/(1<<20), mAfter.memory())
	if cfg.profileDir != "" {
		if err := fetch(fmt.Sprintf("http://%s/debug/pprof/heap?gc=1", mgr.pprofAt), filepath.Join(cfg.profileDir, "heap-restart.pprof")); err != nil {
			return err
		}
	}
	logf("restart: %.0f writes at the API server, %.0f by the manager's client; all writes of any client: %s",
		res.RestartWrites, res.RestartClient, describeWrites(before, after))
	if cpuProfile != nil {
		if err := <-cpuProfile; err != nil {
			return err
		}
	}

	if cfg.keep {
		// One VoiceAgent and its children as the API server has them, for their sizes.
		for _, kind := range []string{"voiceagents", "serviceaccounts", "configmaps", "services", "networkpolicies", "deployments", "poddisruptionbudgets", "secrets", "events"} {
			out, err := exec.CommandContext(ctx, filepath.Join(cfg.bin, "controlplane", "kubectl"), "--kubeconfig", cl.kubeconfig,
				"get", kind, "-n", benchNS, "-o", "json", "--show-managed-fields").Output()
			if err == nil {
				_ = os.WriteFile(filepath.Join(cfg.state, "dump-"+kind+".json"), out, 0o644)
			}
		}
	}
	printTable(os.Stdout, res)
	if cfg.out != "" {
		b, _ := json.Marshal(res)
		appendFile(cfg.out, append(b, '\n'))
	}
	return nil
}

// profileAPIServer starts a CPU profile of the API server (-profile-seconds) when
// -profile is set; the function returned waits for it and writes it to name.
func profileAPIServer(ctx context.Context, rc rest.Interface, cfg config, name string) func() error {
	if cfg.profileDir == "" {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		b, err := rc.Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(cfg.profileSeconds)).
			Timeout(time.Duration(cfg.profileSeconds+30) * time.Second).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(filepath.Join(cfg.profileDir, name), b, 0o644)
		}
		done <- err
	}()
	return func() error { return <-done }
}

func settleLogged(ctx context.Context, rc rest.Interface, when string) error {
	d, err := settle(ctx, rc)
	if err != nil {
		return err
	}
	logf("cluster quiet %s after %.0fs", when, d.Seconds())
	return nil
}

// clearLogged deletes what a plain client made in ns (clearPlain) and waits for the
// cluster to be quiet again.
func clearLogged(ctx context.Context, c client.Client, rc rest.Interface, ns string, workers int) error {
	t0 := time.Now()
	n, err := clearPlain(ctx, c, ns, workers)
	if err != nil {
		return fmt.Errorf("delete the plain client's objects in %s: %w", ns, err)
	}
	logf("deleted the %d objects of the plain client in %s in %.1fs", n, ns, time.Since(t0).Seconds())
	return settleLogged(ctx, rc, "after the delete")
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func applyRow(r results) string {
	if r.PlainApplySeconds == 0 {
		return "not run"
	}
	return fmt.Sprintf("%.1f s (%.2f×)", r.PlainApplySeconds, r.OperatorSeconds/r.PlainApplySeconds)
}

func printTable(out io.Writer, r results) {
	n := float64(r.N)
	mib := func(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
	total := func(v map[string]float64) float64 {
		var t float64
		for k, c := range v {
			if k != "WATCH" {
				t += c
			}
		}
		return t / n
	}
	rows := [][2]string{
		{"VoiceAgents (children each)", fmt.Sprintf("%d (%d)", r.N, r.Children)},
		{"manager flags", strings.Join(r.ManagerArgs, " ")},
		{"plain client (16 workers): all children created", fmt.Sprintf("%.1f s (%s per agent)", r.PlainSeconds, formatVerbs(r.PlainRequests, r.N))},
		{"operator: every child and status for the generation", fmt.Sprintf("%.1f s (children %.1f s)", r.OperatorSeconds, r.ChildrenSeconds)},
		{"ratio to the plain client", fmt.Sprintf("%.2f×", r.OperatorSeconds/r.PlainSeconds)},
		{"plain client, server-side apply instead of create (ratio of the operator to it)", applyRow(r)},
		{"API requests per VoiceAgent, create (API server)", fmt.Sprintf("%.2f: %s; events %.2f", total(r.CreateVerbs), formatVerbs(r.CreateVerbs, r.N), r.CreateEvents/n)},
		{"  the manager's own client, per VoiceAgent", fmt.Sprintf("%.2f", r.CreateClient)},
		{"reconciles per VoiceAgent, create", fmt.Sprintf("%.2f", r.CreateReconcile)},
		{"reconcile p50 / p99", fmt.Sprintf("%.1f ms / %.1f ms", r.P50*1000, r.P99*1000)},
		{"manager CPU, create phase", fmt.Sprintf("%.1f s", r.CreateCPU)},
		{fmt.Sprintf("writes at rest, %.0f s (API server / manager client)", r.RestWindow), fmt.Sprintf("%.0f / %.0f (%.0f reconciles)", r.RestWrites, r.RestClient, r.RestReconciles)},
		{"spec change: every gateway ConfigMap / status", fmt.Sprintf("%.1f s / %.1f s", r.SpecSeconds, r.SpecStatus)},
		{"API requests per VoiceAgent, spec change", fmt.Sprintf("%.2f: %s; events %.2f (%.2f reconciles)", total(r.SpecVerbs), formatVerbs(r.SpecVerbs, r.N), r.SpecEvents/n, r.SpecReconcile)},
		{fmt.Sprintf("writes in %.0f s after a hand-over to a standby (API server / manager client)", r.RestartWindow), fmt.Sprintf("%.0f / %.0f (%.0f GETs; %.0f PUTs, %.0f Lease writes)", r.RestartWrites, r.RestartClient, r.RestartGets, r.RestartPuts, r.RestartLease)},
		{"hand-over: the leader stopped until the standby's workers start", fmt.Sprintf("%.1f s", r.HandOverSeconds)},
		{"manager peak RSS (VmHWM): first run / after restart", mib(r.PeakRSS) + " / " + mib(r.RestartRSS)},
		{"manager CPU seconds, first run (create, rest, spec change)", fmt.Sprintf("%.1f s", r.TotalCPU)},
	}
	fmt.Fprintln(out)
	if r.Label != "" {
		fmt.Fprintf(out, "%s\n\n", r.Label)
	}
	fmt.Fprintln(out, "| measure | value |")
	fmt.Fprintln(out, "|---|---|")
	for _, row := range rows {
		fmt.Fprintf(out, "| %s | %s |\n", row[0], row[1])
	}
}
