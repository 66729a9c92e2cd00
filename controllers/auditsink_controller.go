package controllers

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// AuditSinkReconciler syncs an AuditSink's credentials and reports which VoiceAgents
// use it. Delivery itself is the gateway's job.
type AuditSinkReconciler struct {
	Client client.Client
	// StatusReader reads the gateways' delivery summaries; nil: no delivery status.
	StatusReader AuditStatusReader
	// FailingAfter: DefaultDeliveryFailingAfter when zero.
	FailingAfter time.Duration
	// PollInterval: DefaultDeliveryPollInterval when zero.
	PollInterval time.Duration
	// Clock: the real one when nil.
	Clock clock.PassiveClock
	// Recorder emits the Events of records lost at a gateway's shutdown; may be nil.
	Recorder events.EventRecorder

	optional *optionalAPIs
	losses   *shutdownLosses
}

// Reconcile brings one AuditSink's ExternalSecrets and status in line: its credentials,
// the VoiceAgents that use it, what their gateways report about delivery, then status,
// written once.
func (r *AuditSinkReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	sink := &v1alpha1.AuditSink{}
	if err := r.Client.Get(ctx, req.NamespacedName, sink); err != nil {
		if isNotFound(err) {
			return ctrl.Result{}, nil // deleted; owner references take its ExternalSecrets
		}
		return ctrl.Result{}, fmt.Errorf("get AuditSink %s: %w", req.NamespacedName, err)
	}
	before := sink.DeepCopy()

	ready, reason, msg, err := r.reconcileCredentials(ctx, sink)
	if err != nil {
		return ctrl.Result{}, err
	}
	users, err := r.usedBy(ctx, sink)
	if err != nil {
		return ctrl.Result{}, err
	}
	sink.Status.UsedBy = users
	poll := ready && len(users) > 0 && r.StatusReader != nil
	if poll {
		failing, failingMsg, err := r.reconcileDelivery(ctx, sink, users)
		if err != nil {
			return ctrl.Result{}, err
		}
		if failing {
			ready, reason, msg = false, v1alpha1.ReasonDeliveryFailing, failingMsg
		}
	}
	lost := r.foldShutdownLosses(req.NamespacedName, sink, before)
	setCondition(sink, v1alpha1.ConditionReady, ready, reason, msg)
	if err := writeStatus(ctx, r.Client, sink, before); err != nil {
		r.losses.restore(req.NamespacedName, lost)
		return ctrl.Result{}, err
	}
	switch {
	case poll:
		return ctrl.Result{RequeueAfter: cmp.Or(r.PollInterval, DefaultDeliveryPollInterval)}, nil
	case reason == v1alpha1.ReasonExternalSecretsNotInstalled:
		return ctrl.Result{RequeueAfter: RequeueWhileWaiting}, nil // no watch until the CRD appears
	}
	return ctrl.Result{}, nil
}

// reconcileCredentials applies an ExternalSecret for every credential that comes from an
// external store and reports whether every credential's Secret is there.
func (r *AuditSinkReconciler) reconcileCredentials(ctx context.Context, sink *v1alpha1.AuditSink) (bool, string, string, error) {
	esoInstalled, err := r.optional.installed(ctx, render.ExternalSecretCRD, render.ExternalSecretGVK)
	if err != nil {
		return false, "", "", fmt.Errorf("discover External Secrets: %w", err)
	}
	creds := render.SinkCredentials(sink)
	for _, c := range creds {
		if c.Source.ExternalSecret == nil {
			continue
		}
		if !esoInstalled {
			return false, v1alpha1.ReasonExternalSecretsNotInstalled, fmt.Sprintf(
				"Credential %q comes from an external store, but External Secrets Operator is not installed (CRD %s not found).",
				c.Slot, render.ExternalSecretCRD), nil
		}
		if _, err := applyChild(ctx, r.Client, nil, auditSinkExternalSecret(sink, c)); err != nil {
			return false, "", "", fmt.Errorf("sync credential %q: %w", c.Slot, err)
		}
	}
	return r.credentialsPresent(ctx, sink, creds)
}

// reconcileDelivery fills status.delivery from the gateways of the sink's users and says
// whether one of them fails to deliver, with the message for the condition.
func (r *AuditSinkReconciler) reconcileDelivery(ctx context.Context, sink *v1alpha1.AuditSink, users []string) (bool, string, error) {
	reports, err := r.readDelivery(ctx, sink, users)
	if err != nil {
		return false, "", fmt.Errorf("read delivery status: %w", err)
	}
	now := time.Now()
	if r.Clock != nil {
		now = r.Clock.Now()
	}
	failingAfter := cmp.Or(r.FailingAfter, DefaultDeliveryFailingAfter)
	var failingPod, detail string
	sink.Status.Delivery, failingPod, detail = summariseDelivery(sink.Name, reports, now, failingAfter)
	if failingPod == "" {
		return false, "", nil
	}
	return true, fmt.Sprintf("Gateway %s cannot deliver to this sink: %s (threshold %s). Check that the receiver is reachable and accepts the credentials; records stay queued until it does.",
		failingPod, detail, failingAfter), nil
}

// foldShutdownLosses adds the records gateways reported lost at exit since the last
// status write to status.delivery.recordsLostOnShutdown, which never goes down (the
// delivery figures are read anew each time; this one is kept). It returns what it
// added.
func (r *AuditSinkReconciler) foldShutdownLosses(key types.NamespacedName, sink, before *v1alpha1.AuditSink) int64 {
	var prev int64
	if d := before.Status.Delivery; d != nil {
		prev = d.RecordsLostOnShutdown
	}
	lost := r.losses.take(key)
	if prev+lost == 0 {
		return lost
	}
	if sink.Status.Delivery == nil {
		sink.Status.Delivery = &v1alpha1.AuditDeliveryStatus{}
		if before.Status.Delivery != nil {
			*sink.Status.Delivery = *before.Status.Delivery
		}
	}
	sink.Status.Delivery.RecordsLostOnShutdown = prev + lost
	return lost
}

// credentialsPresent checks by metadata that every credential's Secret exists.
func (r *AuditSinkReconciler) credentialsPresent(ctx context.Context, sink *v1alpha1.AuditSink, creds []render.Credential) (bool, string, string, error) {
	for _, c := range creds {
		s := &metav1.PartialObjectMetadata{}
		s.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: sink.Namespace, Name: c.SecretName}, s)
		if isNotFound(err) {
			return false, v1alpha1.ReasonSecretNotFound, fmt.Sprintf(
				"Secret %s (credential %q) is not present yet in namespace %s.", c.SecretName, c.Slot, sink.Namespace), nil
		}
		if err != nil {
			return false, "", "", fmt.Errorf("get Secret %s metadata: %w", c.SecretName, err)
		}
	}
	return true, v1alpha1.ReasonSinkConfigured, fmt.Sprintf("Sink of type %s is configured; %d credentials present.", sink.Spec.Type, len(creds)), nil
}

func (r *AuditSinkReconciler) usedBy(ctx context.Context, sink *v1alpha1.AuditSink) ([]string, error) {
	list := &v1alpha1.VoiceAgentList{}
	if err := r.Client.List(ctx, list, client.InNamespace(sink.Namespace), client.MatchingFields{indexAuditSinks: sink.Name}); err != nil {
		return nil, fmt.Errorf("list VoiceAgents using AuditSink %s: %w", sink.Name, err)
	}
	var out []string
	for _, va := range list.Items {
		out = append(out, va.Name)
	}
	sort.Strings(out)
	return out, nil
}

// auditSinkExternalSecret syncs one sink credential; it is owned by the sink.
func auditSinkExternalSecret(sink *v1alpha1.AuditSink, c render.Credential) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{
			"name":      c.SecretName,
			"namespace": sink.Namespace,
			"labels":    map[string]any{render.LabelManagedBy: render.FieldOwner, render.LabelAuditSink: sink.Name},
			"ownerReferences": []any{map[string]any{
				"apiVersion": v1alpha1.GroupVersion.String(), "kind": "AuditSink", "name": sink.Name,
				"uid": string(sink.UID), "controller": true, "blockOwnerDeletion": true,
			}},
		},
		"spec": render.ExternalSecretSpec(c),
	}}
	u.SetGroupVersionKind(render.ExternalSecretGVK)
	return u
}

// SetupWithManager registers the controller. It relies on the VoiceAgent index that
// VoiceAgentReconciler.SetupWithManager creates.
func (r *AuditSinkReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.optional = newOptionalAPIs(mgr.GetCache())
	r.losses = newShutdownLosses(r.Recorder)
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.AuditSink{}, indexSecrets, func(o client.Object) []string {
		return render.SecretNames(render.SinkCredentials(o.(*v1alpha1.AuditSink)))
	}); err != nil {
		return fmt.Errorf("index AuditSinks by credential Secret: %w", err)
	}
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.AuditSink{}).
		Watches(&v1alpha1.VoiceAgent{}, handler.EnqueueRequestsFromMapFunc(sinksOfVoiceAgent)).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.sinksOfSecret)).
		WatchesRawSource(source.Kind(mgr.GetCache(), &corev1.Pod{}, r.losses.podHandler())).
		Named("auditsink").
		Build(r)
	if err != nil {
		return fmt.Errorf("build the AuditSink controller: %w", err)
	}
	owner := handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.AuditSink{}, handler.OnlyControllerOwner())
	r.optional.startWatch = watchStarter(c, mgr, owner)
	return nil
}

func sinksOfVoiceAgent(_ context.Context, obj client.Object) []reconcile.Request {
	va, ok := obj.(*v1alpha1.VoiceAgent)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	for _, n := range referencedSinks(va) {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: va.Namespace, Name: n}})
	}
	return out
}

// sinksOfSecret maps a Secret to the AuditSinks whose credentials it holds.
func (r *AuditSinkReconciler) sinksOfSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	list := &v1alpha1.AuditSinkList{}
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{indexSecrets: obj.GetName()}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, s := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
	}
	return out
}
