package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

const gatewayImage = "voiceagent-operator:dev"

// agentYAML is the spec of every bench VoiceAgent: the messaging sample
// (config/samples/voiceagent_v1alpha1_voiceagent_messaging.yaml: three integrations and
// a model key, all from Secrets) with two agent replicas and a daily budget, so that it
// has both PodDisruptionBudgets and a budget to change. No TLS: cert-manager is not in
// the bench cluster.
const agentYAML = `
apiVersion: voiceagent.dev/v1alpha1
kind: VoiceAgent
spec:
  image: registry.example.com/acme/notifier:1.0.0
  replicas: 2
  model:
    provider: anthropic
    name: claude-haiku-4-5
    credentials:
      secretRef: {name: anthropic, key: api-key}
  integrations:
  - name: slack
    type: slack
    endpoint: https://slack.com/api
    auth: {type: bearer}
    credentials: {secretRef: {name: slack, key: bot-token}}
    rateLimit: {requestsPerMinute: 50, burst: 5}
  - name: whatsapp
    type: whatsapp
    endpoint: https://graph.facebook.com/v21.0
    auth: {type: bearer}
    credentials: {secretRef: {name: whatsapp, key: token}}
    rateLimit: {requestsPerMinute: 80, burst: 10}
  - name: email
    type: email
    endpoint: https://api.sendgrid.com/v3
    auth: {type: header, headerName: Authorization}
    credentials: {secretRef: {name: sendgrid, key: api-key}}
    rateLimit: {requestsPerMinute: 100, burst: 10}
  rateLimits: {requestsPerSecond: 2, burst: 200}
  costLimits: {dailyBudget: "20.00", onExceeded: Block}
`

// referencedSecrets are the Secrets agentYAML names, created once per namespace.
var referencedSecrets = map[string]string{"anthropic": "api-key", "slack": "bot-token", "whatsapp": "token", "sendgrid": "api-key"}

func newAgent(ns, name string) *v1alpha1.VoiceAgent {
	va := &v1alpha1.VoiceAgent{}
	if err := yaml.Unmarshal([]byte(agentYAML), va); err != nil {
		panic(err)
	}
	va.Namespace, va.Name = ns, name
	return va
}

func agentName(i int) string { return fmt.Sprintf("agent-%04d", i) }

func renderInputs() render.Inputs {
	return render.Inputs{GatewayImage: gatewayImage, ClusterDomain: "cluster.local"}
}

// childObjects are the objects the operator makes for va (cert-manager, External
// Secrets and KEDA absent), in the order it applies them, with the generated Secrets.
func childObjects(va *v1alpha1.VoiceAgent) ([]client.Object, error) {
	ch, err := render.Render(va, renderInputs())
	if err != nil {
		return nil, err
	}
	objs := []client.Object{ch.ServiceAccount, ch.GatewayServiceAccount, ch.ConfigMap,
		ch.NetworkPolicy, ch.GatewayNetworkPolicy, ch.Service, ch.GatewayService,
		ch.GatewayDeployment, ch.Deployment}
	if ch.HorizontalPodAutoscaler != nil && render.Autoscaled(va) {
		objs = append(objs, ch.HorizontalPodAutoscaler)
	}
	for _, pdb := range []*policyv1.PodDisruptionBudget{ch.PodDisruptionBudget, ch.GatewayPodDisruptionBudget} {
		if pdb != nil {
			objs = append(objs, pdb)
		}
	}
	if render.GeneratesSessionKey(va) {
		key := make([]byte, render.SessionKeySize)
		_, _ = rand.Read(key)
		objs = append(objs, render.SessionKeySecret(va, key))
	}
	tok := make([]byte, render.AgentTokenSize)
	_, _ = rand.Read(tok)
	objs = append(objs, render.AgentTokenSecret(va, "vat_"+base64.RawURLEncoding.EncodeToString(tok), ""))
	return objs, nil
}

// childKey names one child: kind/name.
func childKey(o client.Object) string {
	return reflect.TypeOf(o).Elem().Name() + "/" + o.GetName()
}

// runWorkers runs fn(i) for i in [0,n) on w workers; the first error stops it.
func runWorkers(ctx context.Context, n, w int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// plainClient creates the children of n VoiceAgents directly, 16 (w) agents at a time,
// each agent's objects one after the other: the bound. The objects are the renderer's,
// without owner references (their owner does not exist: the garbage collector would
// delete them) and with another managed-by label (so that the manager, started later,
// does not cache them).
//
// With apply, the children are server-side applied (as the operator does; the
// generated Secrets are created, as the operator does): what the API server allows for
// the operator's kind of request.
func plainClient(ctx context.Context, c client.Client, template *v1alpha1.VoiceAgent, ns string, n, w int, apply bool) (time.Duration, int64, error) {
	var created atomic.Int64
	start := time.Now()
	err := runWorkers(ctx, n, w, func(ctx context.Context, i int) error {
		va := template.DeepCopy()
		va.Name, va.Namespace = agentName(i), ns
		va.UID = types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
		objs, err := childObjects(va)
		if err != nil {
			return err
		}
		for _, o := range objs {
			o.SetOwnerReferences(nil)
			l := o.GetLabels()
			if l == nil {
				l = map[string]string{}
			}
			l[render.LabelManagedBy] = "voiceagent-bench-plain"
			o.SetLabels(l)
			if _, secret := o.(*corev1.Secret); apply && !secret {
				u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
				if err != nil {
					return err
				}
				delete(u, "status")
				if m, ok := u["metadata"].(map[string]any); ok {
					delete(m, "creationTimestamp")
				}
				if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}),
					client.FieldOwner("voiceagent-bench-plain"), client.ForceOwnership); err != nil {
					return fmt.Errorf("apply %s: %w", childKey(o), err)
				}
			} else if err := c.Create(ctx, o); err != nil {
				return fmt.Errorf("create %s: %w", childKey(o), err)
			}
			created.Add(1)
		}
		return nil
	})
	return time.Since(start), created.Load(), err
}

// watcher follows, from the bench's own informers on both namespaces (started before
// the plain client, so that the API server serves the same watches to both), which
// children exist, each VoiceAgent's generation and observedGeneration and each gateway
// ConfigMap's data. Checks read its maps only: no request, no deep copy.
type watcher struct {
	mu       sync.Mutex
	present  map[string]bool
	agents   map[string]agentState
	cmData   map[string]map[string]string
	changed  chan struct{}
	expected map[string][]string // agent -> child keys
}

type agentState struct{ generation, observed int64 }

func newWatcher(ctx context.Context, c cache.Cache, scheme *runtime.Scheme) (*watcher, error) {
	w := &watcher{present: map[string]bool{}, agents: map[string]agentState{}, cmData: map[string]map[string]string{},
		changed: make(chan struct{}, 1), expected: map[string][]string{}}
	meta := func(obj client.Object) *metav1.PartialObjectMetadata {
		gvks, _, _ := scheme.ObjectKinds(obj)
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(gvks[0])
		return m
	}
	kinds := []client.Object{&corev1.ServiceAccount{}, &corev1.Service{}, &corev1.Secret{},
		&networkingv1.NetworkPolicy{}, &appsv1.Deployment{}, &policyv1.PodDisruptionBudget{}}
	for _, k := range kinds {
		kind := reflect.TypeOf(k).Elem().Name()
		inf, err := c.GetInformer(ctx, meta(k))
		if err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(w.handler(func(obj any, gone bool) {
			m, ok := obj.(*metav1.PartialObjectMetadata)
			if !ok {
				return
			}
			w.present[m.Namespace+"/"+kind+"/"+m.Name] = !gone
		})); err != nil {
			return nil, err
		}
	}
	inf, err := c.GetInformer(ctx, &corev1.ConfigMap{})
	if err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(w.handler(func(obj any, gone bool) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		w.present[cm.Namespace+"/ConfigMap/"+cm.Name] = !gone
		if cm.Namespace != benchNS {
			return
		}
		if gone {
			delete(w.cmData, cm.Name)
		} else {
			w.cmData[cm.Name] = cm.Data
		}
	})); err != nil {
		return nil, err
	}
	inf, err = c.GetInformer(ctx, &v1alpha1.VoiceAgent{})
	if err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(w.handler(func(obj any, gone bool) {
		va, ok := obj.(*v1alpha1.VoiceAgent)
		if !ok {
			return
		}
		if va.Namespace != benchNS {
			return
		}
		if gone {
			delete(w.agents, va.Name)
			return
		}
		w.agents[va.Name] = agentState{va.Generation, va.Status.ObservedGeneration}
	})); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *watcher) handler(fn func(obj any, gone bool)) toolscache.ResourceEventHandler {
	notify := func() {
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.mu.Lock(); fn(obj, false); w.mu.Unlock(); notify() },
		UpdateFunc: func(_, obj any) { w.mu.Lock(); fn(obj, false); w.mu.Unlock(); notify() },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			w.mu.Lock()
			fn(obj, true)
			w.mu.Unlock()
			notify()
		},
	}
}

func (w *watcher) expect(name string, keys []string) {
	w.mu.Lock()
	w.expected[name] = keys
	w.mu.Unlock()
}

// pending counts the agents, of those expected, whose children are not all there or
// whose status is not written for generation minGen[name] (or their current one).
func (w *watcher) pending(minGen map[string]int64, wantCM map[string]map[string]string) (children, status, configs int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, keys := range w.expected {
		for _, k := range keys {
			if !w.present[benchNS+"/"+k] {
				children++
				break
			}
		}
		st, ok := w.agents[name]
		if !ok || st.observed != st.generation || st.generation < minGen[name] {
			status++
		}
		if want, ok := wantCM[name]; ok && !reflect.DeepEqual(w.cmData[render.ConfigMapName(&v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Name: name}})], want) {
			configs++
		}
	}
	return children, status, configs
}

// firstConfigDiff says, for one agent whose gateway ConfigMap is not as wanted, what it
// holds and what was wanted.
func (w *watcher) firstConfigDiff(wantCM map[string]map[string]string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, want := range wantCM {
		have := w.cmData[render.ConfigMapName(&v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Name: name}})]
		if !reflect.DeepEqual(have, want) {
			return fmt.Sprintf("%s: have %v\nwant %v", name, have, want)
		}
	}
	return ""
}

// waitFor returns when done() is true, checking on every informer event and at least
// every 100 ms; the time is that of the check that found it.
func (w *watcher) waitFor(ctx context.Context, timeout time.Duration, done func() bool) (time.Time, error) {
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if done() {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-deadline:
			return time.Time{}, fmt.Errorf("not converged within %s", timeout)
		case <-w.changed:
		case <-tick.C:
		}
	}
}

// clearPlain deletes what a plain client made in ns, so that the next phase starts
// from the same cluster as the first: the API server's ClusterIP allocator counts the
// Services in use on every Service create (ipallocator's Used), and with the plain
// phases' 4,000 Services still there at N=1000 that was 11% of its CPU in the first
// 20 s of the operator phase, against 2% for the plain client's own first 20 s.
func clearPlain(ctx context.Context, c client.Client, ns string, workers int) (int, error) {
	lists := []client.ObjectList{&corev1.ServiceList{}, &appsv1.DeploymentList{}, &corev1.ConfigMapList{},
		&corev1.ServiceAccountList{}, &networkingv1.NetworkPolicyList{}, &policyv1.PodDisruptionBudgetList{}, &corev1.SecretList{}}
	var objs []client.Object
	for _, l := range lists {
		if err := c.List(ctx, l, client.InNamespace(ns), client.MatchingLabels{render.LabelManagedBy: "voiceagent-bench-plain"}); err != nil {
			return 0, err
		}
		items := reflect.ValueOf(l).Elem().FieldByName("Items")
		for i := range items.Len() {
			objs = append(objs, items.Index(i).Addr().Interface().(client.Object))
		}
	}
	err := runWorkers(ctx, len(objs), workers, func(ctx context.Context, i int) error {
		return client.IgnoreNotFound(c.Delete(ctx, objs[i]))
	})
	return len(objs), err
}
