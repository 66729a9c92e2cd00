package main

import (
	"flag"
	"math"
	"os"
	"runtime/debug"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/voiceagent-dev/voiceagent-operator/internal/manager"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

func runManager(args []string) error {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	var opts manager.Options
	fs.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8443", "address of the metrics endpoint (HTTPS with --metrics-secure); 0 disables it")
	fs.BoolVar(&opts.MetricsSecure, "metrics-secure", true, "serve metrics over HTTPS, only to clients whose bearer token the API server accepts and who may get the non-resource URL /metrics; false: plain HTTP for anyone")
	fs.StringVar(&opts.MetricsCertDir, "metrics-cert-path", "", "directory with the metrics certificate ("+manager.MetricsCertName+", "+manager.MetricsKeyName+"), reloaded when it changes; empty: a self-signed certificate generated at start")
	fs.BoolVar(&opts.EnableHTTP2, "enable-http2", false, "let the metrics endpoint speak HTTP/2 (off: HTTP/2 stream resets cost the server more than the client)")
	fs.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.StringVar(&opts.PprofAddr, "pprof-bind-address", "", "address of /debug/pprof (CPU and heap profiles, for make bench-operator); empty: off. Profiles show the process's internals: bind it to localhost")
	fs.IntVar(&opts.MaxConcurrentReconciles, "max-concurrent-reconciles", manager.DefaultMaxConcurrentReconciles, "VoiceAgents reconciled at once (one VoiceAgent is never reconciled twice at once)")
	var qps float64
	fs.Float64Var(&qps, "kube-api-qps", manager.DefaultKubeAPIQPS, "the manager's client-side limit on API requests per second; -1: none (the API server's priority and fairness alone)")
	fs.IntVar(&opts.KubeAPIBurst, "kube-api-burst", manager.DefaultKubeAPIBurst, "requests the manager may make at once above --kube-api-qps")
	fs.BoolVar(&opts.LeaderElection, "leader-elect", false, "elect a leader so that only one replica reconciles")
	fs.StringVar(&opts.LeaderElectionNS, "leader-election-namespace", "", "namespace of the leader election lease (default: the pod's)")
	fs.StringVar(&opts.GatewayImage, "gateway-image", os.Getenv("GATEWAY_IMAGE"), "image of the gateway pods (and of the agent pods' inbound TLS role): the operator's own image (env GATEWAY_IMAGE)")
	fs.StringVar(&opts.PrometheusAddress, "autoscaling-prometheus-address", render.DefaultPrometheusAddress, "the Prometheus KEDA reads the gateways' active sessions from, for spec.autoscaling (it must scrape the gateway pods, see the chart's gatewayPodMonitor)")
	fs.StringVar(&opts.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain, for in-cluster egress and certificate names")
	fs.StringVar(&opts.OperatorNamespace, "operator-namespace", os.Getenv("POD_NAMESPACE"), "namespace the operator runs in (env POD_NAMESPACE): admitted to the gateways' admin port to read audit delivery status")
	fs.Func("gateway-metrics-namespaces", "comma-separated namespaces whose pods (Prometheus) may scrape the gateways' metrics port", func(v string) error {
		for _, ns := range strings.Split(v, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				opts.MetricsScraperNamespaces = append(opts.MetricsScraperNamespaces, ns)
			}
		}
		return nil
	})
	goMemLimit := fs.String("go-memory-limit", manager.DefaultGoMemoryLimit, "the Go heap's soft memory limit (runtime/debug.SetMemoryLimit): a percentage of the container's memory limit (env "+manager.MemoryLimitEnv+", bytes, from the downward API), a quantity (200Mi), or off; the default gives way to GOMEMLIMIT when that is set")
	goGC := fs.String("go-gc-percent", manager.DefaultGoGCPercent, "how far the Go heap grows past its live size between collections, in percent (runtime/debug.SetGCPercent), or off (the soft memory limit alone); the default gives way to GOGC when that is set")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file; default: $KUBECONFIG, then in-cluster")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts.KubeAPIQPS = float32(qps)
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	limit, why, err := manager.GoMemoryLimit(*goMemLimit, os.Getenv(manager.MemoryLimitEnv), os.Getenv("GOMEMLIMIT"))
	if err != nil {
		return err
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	ctrl.Log.WithName("setup").Info("Go memory limit", "bytes", debug.SetMemoryLimit(-1), "from", why)
	pct, set, why, err := manager.GoGCPercent(*goGC, os.Getenv("GOGC"), debug.SetMemoryLimit(-1) != math.MaxInt64)
	if err != nil {
		return err
	}
	if set {
		debug.SetGCPercent(pct)
	}
	ctrl.Log.WithName("setup").Info("Go GC percent", "from", why)
	if *kubeconfig != "" {
		if err := os.Setenv("KUBECONFIG", *kubeconfig); err != nil {
			return err
		}
	}
	mgr, err := manager.New(ctrl.GetConfigOrDie(), opts)
	if err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}
