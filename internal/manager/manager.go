// Package manager wires the operator: scheme, cache, controllers, health checks.
package manager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/controllers"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// Options configure the manager.
type Options struct {
	// MetricsAddr is where /metrics is served; "0" disables it.
	MetricsAddr string
	// MetricsSecure serves /metrics over HTTPS to authenticated and authorized clients
	// only (see metricsOptions); false serves plain HTTP to anyone.
	MetricsSecure bool
	// MetricsCertDir holds the metrics certificate (MetricsCertName, MetricsKeyName),
	// reloaded when it changes; empty: a self-signed certificate made at start.
	MetricsCertDir string
	// EnableHTTP2 lets the metrics endpoint speak HTTP/2; off by default.
	EnableHTTP2      bool
	ProbeAddr        string
	LeaderElection   bool
	LeaderElectionNS string
	GatewayImage     string
	ClusterDomain    string
	// PrometheusAddress is where KEDA reads the gateways' session counts for
	// spec.autoscaling; render.DefaultPrometheusAddress when empty.
	PrometheusAddress string
	// AgentTokenSettle is how long a rotation's new agent token is announced to the
	// gateways before the agent pods use it; 2m when zero (tests shorten it).
	AgentTokenSettle time.Duration
	// OperatorNamespace is where the operator runs (env POD_NAMESPACE); when set, the
	// gateways' NetworkPolicies admit the operator to their admin port, and AuditSink
	// status reports delivery read from there.
	OperatorNamespace string
	// MetricsScraperNamespaces may scrape the gateways' metrics (Prometheus).
	MetricsScraperNamespaces []string
	// AuditStatusReader reads a gateway's audit delivery summary; nil: over HTTP.
	AuditStatusReader controllers.AuditStatusReader
	// AuditPollInterval is how often delivery status is refreshed; 30s when zero.
	AuditPollInterval time.Duration
	// SpendReader reads a gateway's spend; nil: over HTTP. SpendInterval is how often
	// status.spend is refreshed; 30s when zero.
	SpendReader   controllers.SpendReader
	SpendInterval time.Duration
	// SkipNameValidation lets tests run two managers in one process.
	SkipNameValidation bool
	// PprofAddr serves net/http/pprof (CPU and heap profiles); empty or "0": off.
	PprofAddr string
	// MaxConcurrentReconciles is how many VoiceAgents are reconciled at once; 1 when
	// zero. The command's default is DefaultMaxConcurrentReconciles.
	MaxConcurrentReconciles int
	// KubeAPIQPS and KubeAPIBurst limit the manager's requests on the client side, all
	// of its clients together; zero leaves cfg's (controller-runtime's: no client-side
	// limit, the API server's priority and fairness alone), a negative QPS turns the
	// limit off. The command's defaults are DefaultKubeAPIQPS and DefaultKubeAPIBurst.
	KubeAPIQPS   float32
	KubeAPIBurst int
}

// Defaults of the manager command, from make bench-operator (docs/performance.md, "The
// operator at scale"). Eight workers, each applying a stage's children at once, came
// closest to a plain server-side apply client at 1,000 VoiceAgents on a two-core API
// server (1.44 times its time, against 1.58-1.76 with four); sixteen, with seven round
// trips per VoiceAgent then, only lengthened its queue. The client limit is there to
// stop a runaway loop, not to pace a bulk apply: 1,000 VoiceAgents created at once cost
// about 18,000 requests, which a limit of 200 per second alone would stretch to 90 s;
// at 500 it stays above what such an API server serves (about 250 per second of the
// operator's requests), and the API server's priority and fairness does the rest.
const (
	DefaultMaxConcurrentReconciles = 8
	DefaultKubeAPIQPS              = 500
	DefaultKubeAPIBurst            = 1000
)

// trimManagedFields keeps, of each managedFields entry, its manager, operation,
// subresource and time, and of its fields what keep returns (nil: none). The operator
// never writes an object it read from the cache back (it applies and patches objects
// it builds), so the trimmed entries never reach the API server.
func trimManagedFields(keep func(raw []byte) []byte) toolscache.TransformFunc {
	return func(in any) (any, error) {
		obj, ok := in.(client.Object)
		if !ok {
			return in, nil
		}
		entries := obj.GetManagedFields()
		for i := range entries {
			if entries[i].FieldsV1 == nil {
				continue
			}
			if kept := keep(entries[i].FieldsV1.GetRawBytes()); kept != nil {
				entries[i].FieldsV1 = metav1.NewFieldsV1(string(kept))
			} else {
				entries[i].FieldsV1 = nil
			}
		}
		return in, nil
	}
}

// specOnly keeps whether the entry owns anything under spec: what render.SpecManagers
// reads (the field managers that changed a VoiceAgent's spec).
func specOnly(raw []byte) []byte {
	if bytes.Contains(raw, []byte(`"f:spec"`)) {
		return []byte(`{"f:spec":{}}`)
	}
	return nil
}

// replicasOnly keeps whether the entry owns spec.replicas: what the autoscaling
// hand-off reads (render.OwnsField) of a Deployment.
func replicasOnly(raw []byte) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return raw // not ours to judge: kept whole
	}
	var spec map[string]json.RawMessage
	if s, ok := top["f:spec"]; !ok || json.Unmarshal(s, &spec) != nil {
		return nil
	}
	if _, ok := spec["f:replicas"]; ok {
		return []byte(`{"f:spec":{"f:replicas":{}}}`)
	}
	return nil
}

// digestChild keeps of a typed child what the operator reads of it: its metadata
// (names, labels, owners, the desired-hash annotation), a Deployment's replicas and
// status, and in annotation controllers.AnnotationLiveDigest the digest of the fields
// the operator's last apply owns, with which a reconcile tells whether the child still
// carries what it wants (controllers, applyChildWith). The spec itself (a Deployment's
// pod template, a ConfigMap's gateway configuration, the policies' rules) is not kept:
// at 1,000 VoiceAgents it was most of the manager's memory. The transform then runs
// after the digest has read managedFields ("then"). The operator never writes a cached
// child back.
func digestChild(then toolscache.TransformFunc) toolscache.TransformFunc {
	return func(in any) (any, error) {
		obj, ok := in.(client.Object)
		if !ok {
			return in, nil
		}
		// Informers may pass an object through twice (a relist): the second time its
		// managedFields are gone, and the digest it has stays.
		digest := controllers.CachedDigest(obj)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			o.Spec = appsv1.DeploymentSpec{Replicas: o.Spec.Replicas}
		case *corev1.ConfigMap:
			o.Data, o.BinaryData = nil, nil
		case *corev1.Service:
			o.Spec, o.Status = corev1.ServiceSpec{}, corev1.ServiceStatus{}
		case *corev1.ServiceAccount:
			o.Secrets, o.ImagePullSecrets, o.AutomountServiceAccountToken = nil, nil, nil
		case *networkingv1.NetworkPolicy:
			o.Spec = networkingv1.NetworkPolicySpec{}
		case *policyv1.PodDisruptionBudget:
			o.Spec, o.Status = policyv1.PodDisruptionBudgetSpec{}, policyv1.PodDisruptionBudgetStatus{}
		case *autoscalingv2.HorizontalPodAutoscaler:
			o.Spec, o.Status = autoscalingv2.HorizontalPodAutoscalerSpec{}, autoscalingv2.HorizontalPodAutoscalerStatus{}
		default:
			return then(in)
		}
		ann := make(map[string]string, len(obj.GetAnnotations())+1)
		maps.Copy(ann, obj.GetAnnotations())
		ann[controllers.AnnotationLiveDigest] = digest
		obj.SetAnnotations(ann)
		return then(obj)
	}
}

// trimPod keeps of a gateway or agent pod what the operator reads (the pods' audit
// delivery and spend readers, the shutdown-loss watch): its metadata, its containers'
// names and ports (the admin port), its phase and IPs, and its containers' states
// (termination messages). Four pods per VoiceAgent, each carrying its whole pod spec
// and status, would otherwise outweigh the Deployments that make them. The operator
// never writes a pod.
func trimPod(in any) (any, error) {
	pod, ok := in.(*corev1.Pod)
	if !ok {
		return in, nil
	}
	pod.ManagedFields = nil
	containers := make([]corev1.Container, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		containers[i] = corev1.Container{Name: c.Name, Ports: c.Ports}
	}
	statuses := make([]corev1.ContainerStatus, len(pod.Status.ContainerStatuses))
	for i, c := range pod.Status.ContainerStatuses {
		statuses[i] = corev1.ContainerStatus{Name: c.Name, State: c.State, LastTerminationState: c.LastTerminationState}
	}
	pod.Spec = corev1.PodSpec{Containers: containers}
	pod.Status = corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP, PodIPs: pod.Status.PodIPs, ContainerStatuses: statuses}
	return pod, nil
}

// Scheme knows every type the operator reads or writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	must(clientgoscheme.AddToScheme(s))
	must(apiextensionsv1.AddToScheme(s))
	must(v1alpha1.AddToScheme(s))
	return s
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// New builds a manager with both controllers registered.
func New(cfg *rest.Config, opts Options) (ctrl.Manager, error) {
	if opts.GatewayImage == "" {
		return nil, fmt.Errorf("--gateway-image is required: the operator's own image, which runs the gateway sidecar")
	}
	// Children are cached only when they carry our label, so that the operator's memory
	// does not grow with every ConfigMap and Deployment in the cluster.
	ours := labels.SelectorFromSet(labels.Set{render.LabelManagedBy: render.FieldOwner})
	// managedFields are up to half of what an applied object weighs in the cache, and
	// the operator reads little of them: who changed a VoiceAgent's spec, who owns a
	// Deployment's replicas. The cache keeps only that (trimManagedFields), and nothing
	// of the other kinds'.
	strip := cache.TransformStripManagedFields()
	byObject := map[client.Object]cache.ByObject{
		&v1alpha1.VoiceAgent{}: {Transform: trimManagedFields(specOnly)},
		&appsv1.Deployment{}:   {Label: ours, Transform: digestChild(trimManagedFields(replicasOnly))},
		// Every Secret's metadata (the referenced ones are the user's, unlabelled), read
		// by listing a namespace's on every reconcile: without copies, which only
		// reading them allows.
		&corev1.Secret{}: {Transform: strip, UnsafeDisableDeepCopy: ptr.To(true)},
	}
	for _, obj := range []client.Object{&corev1.ServiceAccount{}, &corev1.ConfigMap{}, &corev1.Service{},
		&networkingv1.NetworkPolicy{}, &policyv1.PodDisruptionBudget{}, &autoscalingv2.HorizontalPodAutoscaler{}} {
		byObject[obj] = cache.ByObject{Label: ours, Transform: digestChild(strip)}
	}
	byObject[&corev1.Pod{}] = cache.ByObject{Label: ours, Transform: trimPod}
	// Uncompressed: the API server gzips every watch event and response for a client
	// that accepts it (3% of its CPU in make bench-operator's create phase, N=200, its
	// watches and the bench's), for bytes that stay on the cluster's network.
	cfg = rest.CopyConfig(cfg)
	cfg.DisableCompression = true
	// Leader election keeps its own client, never held up by the limit below.
	electionCfg := cfg
	if opts.KubeAPIQPS != 0 {
		cfg = rest.CopyConfig(cfg)
		cfg.QPS, cfg.Burst = opts.KubeAPIQPS, max(opts.KubeAPIBurst, 1)
		// One limit for the whole process: controller-runtime makes a client per
		// kind, and each would otherwise get a limiter of its own.
		if cfg.QPS > 0 {
			cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
		}
	}
	metrics, certWatcher, err := metricsOptions(opts)
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 metrics,
		HealthProbeBindAddress:  opts.ProbeAddr,
		PprofBindAddress:        opts.PprofAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "voiceagent-operator.voiceagent.dev",
		LeaderElectionNamespace: opts.LeaderElectionNS,
		LeaderElectionConfig:    electionCfg,
		// A manager that is stopped (a rolling update, a drained node) releases the Lease,
		// so that the standby takes over at once rather than after the lease duration
		// (15 s). Safe because the command exits as soon as Start returns.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{ByObject: byObject, DefaultTransform: strip},
		Client:                        client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Controller:                    config.Controller{SkipNameValidation: &opts.SkipNameValidation},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if certWatcher != nil {
		if err := mgr.Add(certWatcher); err != nil {
			return nil, fmt.Errorf("add metrics certificate watcher: %w", err)
		}
	}
	va := &controllers.VoiceAgentReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Recorder:          mgr.GetEventRecorder("voiceagent-operator"),
		GatewayImage:      opts.GatewayImage,
		ClusterDomain:     opts.ClusterDomain,
		PrometheusAddress: opts.PrometheusAddress,
		TokenSettle:       opts.AgentTokenSettle,

		MaxConcurrentReconciles: opts.MaxConcurrentReconciles,
		GatewayAdminAccess: render.AdminAccess{
			OperatorNamespace: opts.OperatorNamespace, ScraperNamespaces: opts.MetricsScraperNamespaces,
		},
	}
	if err := va.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up VoiceAgent controller: %w", err)
	}
	reader := opts.AuditStatusReader
	if reader == nil {
		reader = controllers.HTTPAuditStatusReader{}
	}
	if err := (&controllers.AuditSinkReconciler{Client: mgr.GetClient(), StatusReader: reader, PollInterval: opts.AuditPollInterval,
		Recorder: mgr.GetEventRecorder("voiceagent-operator")}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up AuditSink controller: %w", err)
	}
	spendReader := opts.SpendReader
	if spendReader == nil {
		spendReader = controllers.HTTPSpendReader{}
	}
	if err := mgr.Add(&controllers.SpendCollector{Client: mgr.GetClient(), Reader: spendReader,
		Recorder: mgr.GetEventRecorder("voiceagent-operator"), Interval: opts.SpendInterval}); err != nil {
		return nil, fmt.Errorf("add the spend collector: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add readyz check: %w", err)
	}
	return mgr, nil
}
