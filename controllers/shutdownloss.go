package controllers

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

var auditRecordsLostOnShutdown = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "voiceagent_operator_audit_records_lost_on_shutdown_total",
	Help: "Audit records gateway pods still held undelivered when they exited, as their termination messages report, by namespace and AuditSink.",
}, []string{"namespace", "sink"})

// shutdownLosses reads what exiting gateway pods could not deliver (their termination
// message, gw.ShutdownReport) and holds it until the AuditSink reconciler adds it to
// status.delivery.recordsLostOnShutdown. Each termination counts once: it is known by
// pod UID and finish time, and one that finished before this process started is left
// alone (a previous operator may have counted it).
type shutdownLosses struct {
	since    time.Time
	recorder events.EventRecorder

	mu      sync.Mutex
	seen    map[string]bool
	pending map[types.NamespacedName]int64
}

func newShutdownLosses(recorder events.EventRecorder) *shutdownLosses {
	return &shutdownLosses{since: time.Now(), recorder: recorder, seen: map[string]bool{}, pending: map[types.NamespacedName]int64{}}
}

// observe counts the losses a gateway pod's status reports for the first time and
// returns the AuditSinks they belong to.
func (l *shutdownLosses) observe(pod *corev1.Pod) []types.NamespacedName {
	if !render.IsGatewayPod(pod.Labels) {
		return nil
	}
	var sinks []types.NamespacedName
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != render.GatewayContainer {
			continue
		}
		for _, term := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
			if term == nil || term.Message == "" || term.FinishedAt.Time.Before(l.since) {
				continue
			}
			var report gw.ShutdownReport
			if json.Unmarshal([]byte(term.Message), &report) != nil || len(report.AuditRecordsLost) == 0 {
				continue
			}
			key := string(pod.UID) + "/" + term.FinishedAt.UTC().Format(time.RFC3339Nano)
			l.mu.Lock()
			if l.seen[key] {
				l.mu.Unlock()
				continue
			}
			l.seen[key] = true
			for sink, n := range report.AuditRecordsLost {
				name := types.NamespacedName{Namespace: pod.Namespace, Name: sink}
				l.pending[name] += int64(n)
				sinks = append(sinks, name)
				auditRecordsLostOnShutdown.WithLabelValues(pod.Namespace, sink).Add(float64(n))
			}
			l.mu.Unlock()
			l.event(pod, report)
		}
	}
	return sinks
}

// event tells the VoiceAgent's readers that records went with a pod.
func (l *shutdownLosses) event(pod *corev1.Pod, report gw.ShutdownReport) {
	if l.recorder == nil {
		return
	}
	va := &v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Labels[render.LabelInstance]}}
	va.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("VoiceAgent"))
	for sink, n := range report.AuditRecordsLost {
		l.recorder.Eventf(va, nil, corev1.EventTypeWarning, "AuditRecordsLostOnShutdown", "Shutdown",
			"Gateway pod %s exited with %d audit records for AuditSink %s undelivered; they went with the pod (see the sink's status.delivery)", pod.Name, n, sink)
	}
}

// take hands over the records pending for sink; give them back with restore if they
// could not be written.
func (l *shutdownLosses) take(sink types.NamespacedName) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.pending[sink]
	delete(l.pending, sink)
	return n
}

func (l *shutdownLosses) restore(sink types.NamespacedName, n int64) {
	if n == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending[sink] += n
}

// podHandler watches gateway pods' status for termination messages and enqueues the
// AuditSinks whose records were lost.
func (l *shutdownLosses) podHandler() handler.TypedEventHandler[*corev1.Pod, reconcile.Request] {
	enqueue := func(pod *corev1.Pod, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, s := range l.observe(pod) {
			q.Add(reconcile.Request{NamespacedName: s})
		}
	}
	return handler.TypedFuncs[*corev1.Pod, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[*corev1.Pod], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[*corev1.Pod], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[*corev1.Pod], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
	}
}
