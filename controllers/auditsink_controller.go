package controllers

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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
	// Now: time.Now when nil.
	Now func() time.Time

	optional *optionalAPIs
}

// Reconcile brings one AuditSink's ExternalSecrets and status in line.
func (r *AuditSinkReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	sink := &v1alpha1.AuditSink{}
	if err := r.Client.Get(ctx, req.NamespacedName, sink); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	beforeObj := sink.DeepCopy()
	before := &beforeObj.Status
	esoInstalled, err := r.optional.installed(ctx, render.ExternalSecretCRD, render.ExternalSecretGVK)
	if err != nil {
		return ctrl.Result{}, err
	}
	creds := render.SinkCredentials(sink)
	ready, reason, msg := true, v1alpha1.ReasonSinkConfigured, fmt.Sprintf("Sink of type %s is configured.", sink.Spec.Type)
	for _, c := range creds {
		if c.Source.ExternalSecret == nil {
			continue
		}
		if !esoInstalled {
			ready, reason, msg = false, v1alpha1.ReasonExternalSecretsNotInstall, fmt.Sprintf(
				"Credential %q comes from an external store, but External Secrets Operator is not installed (CRD %s not found).",
				c.Slot, render.ExternalSecretCRD)
			continue
		}
		es := auditSinkExternalSecret(sink, c)
		if _, err := applyChild(ctx, r.Client, es); err != nil {
			return ctrl.Result{}, err
		}
	}
	if ready {
		ready, reason, msg = r.credentialsPresent(ctx, sink, creds)
	}
	users, err := r.usedBy(ctx, sink)
	if err != nil {
		return ctrl.Result{}, err
	}
	sink.Status.UsedBy = users
	poll := false
	if ready && len(users) > 0 && r.StatusReader != nil {
		poll = true
		reports, err := r.readDelivery(ctx, sink, users)
		if err != nil {
			return ctrl.Result{}, err
		}
		now, failingAfter := time.Now(), r.FailingAfter
		if r.Now != nil {
			now = r.Now()
		}
		if failingAfter == 0 {
			failingAfter = DefaultDeliveryFailingAfter
		}
		var failingPod, detail string
		sink.Status.Delivery, failingPod, detail = summariseDelivery(sink.Name, reports, now, failingAfter)
		if failingPod != "" {
			ready, reason = false, v1alpha1.ReasonDeliveryFailing
			msg = fmt.Sprintf("Gateway %s cannot deliver to this sink: %s (threshold %s). Check that the receiver is reachable and accepts the credentials; records stay queued until it does.",
				failingPod, detail, failingAfter)
		}
	}
	status := metav1.ConditionFalse
	if ready {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&sink.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: sink.Generation,
	})
	sink.Status.ObservedGeneration = sink.Generation
	result := ctrl.Result{}
	switch {
	case poll:
		result.RequeueAfter = r.PollInterval
		if result.RequeueAfter == 0 {
			result.RequeueAfter = DefaultDeliveryPollInterval
		}
	case !ready && reason == v1alpha1.ReasonExternalSecretsNotInstall:
		result.RequeueAfter = RequeueWhileWaiting
	}
	if equality.Semantic.DeepEqual(before, &sink.Status) {
		return result, nil
	}
	return result, r.Client.Status().Patch(ctx, sink, client.MergeFrom(beforeObj))
}

func (r *AuditSinkReconciler) credentialsPresent(ctx context.Context, sink *v1alpha1.AuditSink, creds []render.Credential) (bool, string, string) {
	for _, c := range creds {
		s := &metav1.PartialObjectMetadata{}
		s.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: sink.Namespace, Name: c.SecretName}, s); err != nil {
			return false, v1alpha1.ReasonSecretNotFound, fmt.Sprintf(
				"Secret %s (credential %q) is not present yet in namespace %s.", c.SecretName, c.Slot, sink.Namespace)
		}
	}
	return true, v1alpha1.ReasonSinkConfigured, fmt.Sprintf("Sink of type %s is configured; %d credentials present.", sink.Spec.Type, len(creds))
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
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.AuditSink{}, indexSecrets, func(o client.Object) []string {
		return render.SecretNames(render.SinkCredentials(o.(*v1alpha1.AuditSink)))
	}); err != nil {
		return err
	}
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.AuditSink{}).
		Watches(&v1alpha1.VoiceAgent{}, handler.EnqueueRequestsFromMapFunc(sinksOfVoiceAgent)).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.sinksOfSecret)).
		Named("auditsink").
		Build(r)
	if err != nil {
		return err
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
