// Package controllers holds the reconcilers. They are thin: fetch, render (package
// render), apply, report. What a child looks like is decided in package render.
package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	"github.com/voiceagent-dev/voiceagent-operator/internal/render"
)

// Field indexes on VoiceAgents, so that a Secret or AuditSink event finds its users.
const (
	indexSecrets    = "voiceagent.dev/secrets"
	indexAuditSinks = "voiceagent.dev/auditsinks"
	// indexVoiceAgent indexes children by their VoiceAgent's label, so that listing one
	// VoiceAgent's does not go through every one of the namespace.
	indexVoiceAgent = "voiceagent.dev/voiceagent"
)

// RequeueWhileWaiting is how often a VoiceAgent waiting on something that has no watch
// of its own (an uninstalled CRD) is looked at again.
const RequeueWhileWaiting = 30 * time.Second

// VoiceAgentReconciler reconciles VoiceAgents.
type VoiceAgentReconciler struct {
	Client client.Client
	// APIReader reads from the API server, not the cache: a child whose cached digest
	// differs from what is wanted is compared in full (liveChecker). Required.
	APIReader    client.Reader
	Recorder     events.EventRecorder
	GatewayImage string
	// ClusterDomain is the cluster's DNS suffix; "cluster.local" when empty.
	ClusterDomain string
	// GatewayAdminAccess says who besides nobody may reach the gateways' admin port.
	GatewayAdminAccess render.AdminAccess
	// PrometheusAddress is where KEDA reads the session counts it scales on.
	PrometheusAddress string
	// TokenSettle is how long a rotation's announced token waits before the agent
	// pods use it; tokenSettle when zero.
	TokenSettle time.Duration
	// MaxConcurrentReconciles is how many VoiceAgents are reconciled at once (never two
	// reconciles of one VoiceAgent); 1 when zero.
	MaxConcurrentReconciles int

	optional *optionalAPIs
	// applies keeps the events of the children and Secrets a reconcile wrote from
	// starting another (ownApplies).
	applies ownApplies
	live    struct {
		once    sync.Once
		checker *liveChecker
	}
	// rotations are the agent token rotations this process completed, and
	// pendingTokens the ones it announced (pendingToken), by VoiceAgent UID.
	rotations, pendingTokens sync.Map
}

// +kubebuilder:rbac:groups=voiceagent.dev,resources=voiceagents,verbs=get;list;watch
// +kubebuilder:rbac:groups=voiceagent.dev,resources=voiceagents/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=voiceagent.dev,resources=auditsinks,verbs=get;list;watch
// +kubebuilder:rbac:groups=voiceagent.dev,resources=auditsinks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=serviceaccounts;configmaps;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates;issuers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=external-secrets.io,resources=externalsecrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=keda.sh,resources=scaledobjects,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// Reconcile brings va's children and status in line with its spec.
func (r *VoiceAgentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if r.optional == nil {
		r.optional = newOptionalAPIs(r.Client)
	}
	if r.APIReader == nil {
		return ctrl.Result{}, errNoAPIReader
	}
	r.applies.begin(req.NamespacedName)
	defer r.applies.end(req.NamespacedName)
	va := &v1alpha1.VoiceAgent{}
	if err := r.Client.Get(ctx, req.NamespacedName, va); err != nil {
		if isNotFound(err) {
			// Deleted: the garbage collector takes its children, and this takes the
			// cert-manager Secrets it had no time to adopt.
			return ctrl.Result{}, r.removeUnadoptedCertSecrets(ctx, req.Namespace, req.Name)
		}
		return ctrl.Result{}, fmt.Errorf("get VoiceAgent %s: %w", req.NamespacedName, err)
	}
	if !va.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references let the garbage collector delete children
	}
	before := va.DeepCopy()

	obs, err := r.observe(ctx, va)
	if err != nil {
		return ctrl.Result{}, err
	}
	tokenWait, err := r.ensureSecrets(ctx, va, obs)
	if errors.Is(err, errCacheBehind) {
		log.FromContext(ctx).V(1).Info("a generated Secret exists that the cache does not show yet; retrying", "after", cacheBehindRetry)
		return ctrl.Result{RequeueAfter: cacheBehindRetry}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.adoptCertificateSecrets(ctx, va, obs); err != nil {
		return ctrl.Result{}, err
	}
	in := obs.renderInputs(va, r.GatewayImage, r.ClusterDomain, r.GatewayAdminAccess)
	in.PrometheusAddress = r.PrometheusAddress
	children, err := render.Render(va, in)
	if err != nil {
		// The API server's validation lets nothing through that render rejects, short of a
		// bug; say so in status rather than retrying forever.
		log.FromContext(ctx).Error(err, "render failed")
		r.recordGenerated(va, obs.takeGenerated())
		// Fail closed: the agent pods keep DNS and their gateway, and lose whatever
		// wider way out an older policy gave them.
		if _, lockErr := applyChild(ctx, r.Client, r.liveChecker(), render.LockdownNetworkPolicy(va)); lockErr != nil {
			log.FromContext(ctx).Error(lockErr, "lock down the agent pods' NetworkPolicy")
		}
		setCondition(va, v1alpha1.ConditionReady, false, v1alpha1.ReasonInvalidSpec,
			"The spec cannot be rendered: "+err.Error()+". Fix the named field. Until then the agent pods may reach only DNS and their gateway.")
		return ctrl.Result{}, writeStatus(ctx, r.Client, va, before)
	}

	applyErr := r.applyAll(ctx, va, obs, children)
	r.recordGenerated(va, obs.takeGenerated()) // what no Created event carried
	if applyErr != nil {
		log.FromContext(ctx).Error(applyErr, "apply failed")
	}
	requeue := r.updateStatus(ctx, va, obs, children, applyErr)
	if err := writeStatus(ctx, r.Client, va, before); err != nil {
		return ctrl.Result{}, err
	}
	if applyErr != nil {
		return ctrl.Result{}, applyErr
	}
	var after time.Duration
	if requeue {
		after = RequeueWhileWaiting
	}
	if tokenWait > 0 && (after == 0 || tokenWait < after) {
		after = tokenWait
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

// errCacheBehind: a generated Secret's create found it there already, so the cache
// is behind the API server (an earlier reconcile made it). The reconcile stops there
// and comes back after cacheBehindRetry, rather than render the pods' restart hash
// without the Secret's version and count on an event (the Secret's create, which
// ownApplies may have dropped) to correct it.
var errCacheBehind = errors.New("a generated Secret exists that the cache does not show yet")

// cacheBehindRetry is how soon a reconcile stopped by errCacheBehind runs again.
const cacheBehindRetry = 200 * time.Millisecond

// errNoAPIReader: without a reader of the API server, a child whose cached digest
// misses could be settled only by an apply, a write on every reconcile.
var errNoAPIReader = errors.New("VoiceAgentReconciler.APIReader is not set: give it the manager's GetAPIReader()")

// liveChecker is the reconciler's one liveChecker, made on first use.
func (r *VoiceAgentReconciler) liveChecker() *liveChecker {
	r.live.once.Do(func() { r.live.checker = newLiveChecker(r.APIReader) })
	return r.live.checker
}

// applyAll applies every wanted child and deletes the ones no longer wanted.
func (r *VoiceAgentReconciler) applyAll(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed, ch *render.Children) error {
	// Policies before pods, so that no pod ever runs unrestricted; the gateway's
	// certificates, and the ExternalSecrets that fill the Secrets the gateway mounts,
	// before the pods that mount them; a Deployment before what scales it. The children
	// of one stage do not depend on each other and are applied at once: a new
	// VoiceAgent takes two round trips for its children (plus its generated Secrets and
	// its status), not thirteen. The gateway and agent Deployments go together: an
	// agent pod that starts first finds its gateway's Service there and retries a call
	// until a gateway pod is ready, as it must after any gateway restart.
	first := []client.Object{ch.ServiceAccount, ch.GatewayServiceAccount, ch.ConfigMap,
		ch.NetworkPolicy, ch.GatewayNetworkPolicy, ch.Service, ch.GatewayService}
	if obs.esoInstalled {
		for _, es := range ch.ExternalSecrets {
			first = append(first, es)
		}
	}
	if obs.certManagerInstalled && ch.Certificate != nil {
		first = append(first, ch.Certificate)
	}
	stages := [][]client.Object{first}
	if obs.certManagerInstalled {
		for _, o := range ch.GatewayTLS { // in dependency order, one at a time
			stages = append(stages, []client.Object{o})
		}
	}
	forceAgent, handOffPending := false, false
	if render.Autoscaled(va) {
		handedOff, pending, err := r.handOffReplicas(ctx, ch.Deployment, va)
		if err != nil {
			return err
		}
		// The operator owned the count: the Deployment is applied without it now, even if
		// nothing else differs, which is what releases it.
		forceAgent, handOffPending = handedOff, pending
	}
	workloads := []client.Object{ch.GatewayDeployment, ch.Deployment}
	for _, pdb := range []*policyv1.PodDisruptionBudget{ch.PodDisruptionBudget, ch.GatewayPodDisruptionBudget} {
		if pdb != nil {
			workloads = append(workloads, pdb)
		}
	}
	stages = append(stages, workloads)
	switch {
	case ch.ScaledObject != nil && obs.kedaInstalled:
		stages = append(stages, []client.Object{ch.ScaledObject})
	case ch.HorizontalPodAutoscaler != nil:
		stages = append(stages, []client.Object{ch.HorizontalPodAutoscaler})
	}
	var created, updated []string
	for _, stage := range stages {
		results := make([]applyResult, len(stage))
		answers := make([]*unstructured.Unstructured, len(stage))
		g, gctx := errgroup.WithContext(ctx)
		for i, obj := range stage {
			g.Go(func() error {
				isAgent := obj == client.Object(ch.Deployment)
				res, answer, err := applyChildObject(gctx, r.Client, r.liveChecker(), obj, forceAgent && isAgent)
				// A new autoscaled agent Deployment gets its minimum replicas from the
				// reconcile its create event starts: that one is not dropped.
				if answer != nil && !(res == applyCreated && isAgent && handOffPending) {
					r.applies.record(answer, client.ObjectKeyFromObject(va))
				}
				results[i], answers[i] = res, answer
				return err
			})
		}
		err := g.Wait()
		for i, obj := range stage {
			name := childKey(obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName())
			// Status reads every child this reconcile applied as the apply answered
			// (also one re-created as drift, which recordApply reports as unchanged):
			// the event of that answer starts no reconcile.
			if answers[i] != nil {
				if obs.applied == nil {
					obs.applied = map[string]*unstructured.Unstructured{}
				}
				obs.applied[name] = answers[i]
			}
			switch r.recordApply(va, obj, results[i]) {
			case applyCreated:
				created = append(created, name)
			case applyUpdated:
				updated = append(updated, name)
			}
		}
		if err != nil {
			r.recordApplied(ctx, va, obs, created, updated, false)
			return err
		}
	}
	// Children re-created as drift are only counted in a generation already observed,
	// so created and updated are all that changed for a new one.
	r.recordApplied(ctx, va, obs, created, updated, len(created)+len(updated) > 0 && va.Status.ObservedGeneration != va.Generation)
	return r.pruneStale(ctx, va, obs, ch)
}

// generatedSecret is a Secret the reconcile generated (the session key, the agent
// token): reason is the Event that says so when no Created event of the same reconcile
// carries it, note what either says.
type generatedSecret struct{ reason, note string }

// recordApplied emits what a reconcile applied, in as few Events as say it all: the
// events library folds events of one reason into a series that keeps the first note
// only, so an event per child cost requests and said less, and at 1,000 VoiceAgents
// every Event of a create is an API request per VoiceAgent.
//
//   - A new generation of the spec applied (specChange) is one Event: the operator's
//     audit record of the change, naming the generation, who last changed the spec,
//     what was created and what was updated, and the Secrets generated. It is
//     SpecChangeApplied, or Created for the VoiceAgent's first generation (its creation:
//     one Event per create).
//   - Otherwise (an input changed, or a child was created with no new generation) a
//     Created and an Updated Event, the generated Secrets folded into the Created one.
//   - Secrets generated with nothing created beside them (the agent token's Secret
//     deleted by hand) keep their own Events.
//
// DriftCorrected Warnings stay one per child (recordApply).
func (r *VoiceAgentReconciler) recordApplied(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed, created, updated []string, specChange bool) {
	generated := obs.takeGenerated()
	if specChange {
		children := slices.Concat(created, updated)
		managers := render.SpecManagers(va.ManagedFields)
		log.FromContext(ctx).Info("audit: applied a spec change",
			"audit", true, "generation", va.Generation, "children", children, "created", created,
			"updated", updated, "generatedSecrets", generatedNames(generated), "specManagers", managers)
		who := "an unknown field manager"
		if len(managers) > 0 {
			who = strings.Join(managers, ", ")
		}
		reason, action := "SpecChangeApplied", "Apply"
		if va.Status.ObservedGeneration == 0 {
			reason, action = "Created", "Create"
		}
		var parts []string
		if len(created) > 0 {
			parts = append(parts, "created "+strings.Join(created, ", "))
		}
		if len(updated) > 0 {
			parts = append(parts, "updated "+strings.Join(updated, ", "))
		}
		if len(generated) > 0 {
			parts = append(parts, "generated "+joinGenerated(generated))
		}
		r.event(va, corev1.EventTypeNormal, reason, action, "%s", fitNote(fmt.Sprintf(
			"Generation %d (spec last changed by %s): %s", va.Generation, who, strings.Join(parts, "; "))))
		return
	}
	if len(created) > 0 {
		note := "Created " + strings.Join(created, ", ")
		if len(generated) > 0 {
			note += "; generated " + joinGenerated(generated)
			generated = nil
		}
		r.event(va, corev1.EventTypeNormal, "Created", "Create", "%s", fitNote(note))
	}
	if len(updated) > 0 {
		r.event(va, corev1.EventTypeNormal, "Updated", "Update", "%s", fitNote("Applied "+strings.Join(updated, ", ")+": what the VoiceAgent wants changed"))
	}
	r.recordGenerated(va, generated)
}

// recordGenerated emits an Event of its own for each generated Secret.
func (r *VoiceAgentReconciler) recordGenerated(va *v1alpha1.VoiceAgent, generated []generatedSecret) {
	for _, g := range generated {
		r.event(va, corev1.EventTypeNormal, g.reason, "Create", "Generated %s", g.note)
	}
}

// takeGenerated returns the generated Secrets not reported yet, and forgets them.
func (o *observed) takeGenerated() []generatedSecret {
	g := o.generated
	o.generated = nil
	return g
}

func joinGenerated(generated []generatedSecret) string {
	notes := make([]string, len(generated))
	for i, g := range generated {
		notes[i] = g.note
	}
	return strings.Join(notes, " and ")
}

func generatedNames(generated []generatedSecret) []string {
	names := make([]string, len(generated))
	for i, g := range generated {
		names[i] = g.reason
	}
	return names
}

// maxNoteLength is the API server's limit on an Event's note: a longer one is refused,
// and the Event lost.
const maxNoteLength = 1024

// fitNote cuts a note to what the API server accepts; the operator's log line (for a
// spec change) keeps the whole list.
func fitNote(note string) string {
	if len(note) <= maxNoteLength {
		return note
	}
	const more = " … (cut: see the operator's log)"
	cut := maxNoteLength - len(more)
	for cut > 0 && !utf8.RuneStart(note[cut]) {
		cut--
	}
	return note[:cut] + more
}

// recordApply counts what an apply did and emits the drift events, one per child. It
// returns applyCreated or applyUpdated for a child to name in the Created or Updated
// event of the reconcile (recordApplied), applyUnchanged otherwise.
func (r *VoiceAgentReconciler) recordApply(va *v1alpha1.VoiceAgent, obj client.Object, res applyResult) applyResult {
	kind := obj.GetObjectKind().GroupVersionKind().Kind
	switch res {
	case applyCreated:
		childrenApplied.WithLabelValues(kind, "created").Inc()
		// Children every VoiceAgent has from its first reconcile on: missing later means
		// someone deleted one.
		if va.Status.ObservedGeneration == va.Generation && alwaysWanted(kind) {
			driftCorrections.WithLabelValues(kind).Inc()
			r.event(va, corev1.EventTypeWarning, "DriftCorrected", "Create",
				"Re-created %s %s: it was deleted by hand", kind, obj.GetName())
			return applyUnchanged
		}
		return applyCreated
	case applyUpdated:
		childrenApplied.WithLabelValues(kind, "updated").Inc()
		return applyUpdated
	case applyDrifted:
		childrenApplied.WithLabelValues(kind, "updated").Inc()
		driftCorrections.WithLabelValues(kind).Inc()
		r.event(va, corev1.EventTypeWarning, "DriftCorrected", "Update",
			"Reverted a manual edit of %s %s: it differed from what the operator last applied", kind, obj.GetName())
	}
	return applyUnchanged
}

func alwaysWanted(kind string) bool {
	switch kind {
	case "ServiceAccount", "ConfigMap", "Service", "NetworkPolicy", "Deployment":
		return true
	}
	return false
}

func (r *VoiceAgentReconciler) event(va *v1alpha1.VoiceAgent, typ, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(va, nil, typ, reason, action, format, args...)
	}
}

// tokenSettle is by default how long a rotation's announced token waits before the agent pods
// use it: the kubelet refreshes a mounted Secret within its sync period (1m) plus its
// cache's TTL, and the gateway pods must know the token first.
const tokenSettle = 2 * time.Minute

// pendingToken is a rotation this process announced and has yet to complete: the value
// is kept in memory only (the operator never reads a token back). After a restart the
// rotation is announced again with a new value.
type pendingToken struct {
	rotation, token string
	announced       time.Time
}

// ensureAgentToken creates the agent token once, and rotates it when the VoiceAgent's
// rotation annotation differs from the one the Secret records, in two steps so that no
// agent pod ever presents a token its gateways do not know yet:
//  1. announce: the new token goes under the key next, which only the gateway pods
//     mount and accept beside the current one;
//  2. after tokenSettle: it becomes token, next goes, the rotation is recorded, and the
//     agent pods roll onto it (their restart hash follows the recorded rotation).
//
// Both steps are merge patches of the fields they set: the current token is never
// read. It returns how long to wait for step 2, 0 when nothing waits.
func (r *VoiceAgentReconciler) ensureAgentToken(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed) (time.Duration, error) {
	name := render.AgentTokenSecretName(va)
	want := va.Annotations[render.AnnotationRotateAgentToken]
	exists := obs.secrets[name] != ""
	if !exists {
		token, err := newAgentToken()
		if err != nil {
			return 0, err
		}
		secret := render.AgentTokenSecret(va, token, want)
		if err := r.Client.Create(ctx, secret, client.FieldOwner(render.FieldOwner)); err != nil {
			if isAlreadyExists(err) {
				return 0, errCacheBehind
			}
			return 0, fmt.Errorf("create agent token Secret: %w", err)
		}
		r.applies.record(secret, client.ObjectKeyFromObject(va))
		obs.secrets[secret.Name] = secret.ResourceVersion
		obs.agentTokenRotation, obs.agentTokenUID = want, string(secret.UID)
		r.rotations.Store(va.UID, want)
		obs.generated = append(obs.generated, generatedSecret{reason: "AgentTokenGenerated",
			note: fmt.Sprintf("the agent token in Secret %s (the gateway accepts only calls that carry it)", secret.Name)})
		return 0, nil
	}
	// The cache may not show what this process just wrote yet: never answer one
	// request twice.
	if obs.agentTokenRotation == want {
		if obs.agentTokenAnnounced != "" {
			// A rotation was asked for and then withdrawn: its announced token must not
			// stay accepted.
			secret := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
				ObjectMeta: metav1.ObjectMeta{Namespace: va.Namespace, Name: name}}
			if err := r.patchSecret(ctx, secret, map[string]any{
				"metadata": map[string]any{"annotations": map[string]any{render.AnnotationAgentTokenAnnounced: nil}},
				"data":     map[string]any{render.AgentNextTokenKey: nil},
			}); err != nil {
				return 0, fmt.Errorf("withdraw the announced agent token in Secret %s: %w", name, err)
			}
			r.pendingTokens.Delete(va.UID)
			obs.agentTokenAnnounced = ""
		}
		return 0, nil
	}
	if done, ok := r.rotations.Load(va.UID); ok && done == want {
		return 0, nil
	}
	secret := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: va.Namespace, Name: name}}
	p, ok := r.pendingTokens.Load(va.UID)
	if pending, _ := p.(pendingToken); !ok || pending.rotation != want {
		token, err := newAgentToken()
		if err != nil {
			return 0, err
		}
		patch := map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{render.AnnotationAgentTokenAnnounced: want}},
			"data":     map[string]any{render.AgentNextTokenKey: []byte(token)},
		}
		if err := r.patchSecret(ctx, secret, patch); err != nil {
			return 0, fmt.Errorf("announce the new agent token in Secret %s: %w", name, err)
		}
		r.pendingTokens.Store(va.UID, pendingToken{rotation: want, token: token, announced: time.Now()})
		r.event(va, corev1.EventTypeNormal, "AgentTokenAnnounced", "Update",
			"Rotation %q: announced a new agent token to the gateway pods in Secret %s; the agent pods move onto it in %s", want, name, r.tokenSettle())
		return r.tokenSettle(), nil
	}
	pending := p.(pendingToken)
	if wait := r.tokenSettle() - time.Since(pending.announced); wait > 0 {
		return wait, nil
	}
	patch := map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{
			render.AnnotationRotateAgentToken: want, render.AnnotationAgentTokenAnnounced: nil,
		}},
		"data": map[string]any{render.AgentTokenKey: []byte(pending.token), render.AgentNextTokenKey: nil},
	}
	if err := r.patchSecret(ctx, secret, patch); err != nil {
		return 0, fmt.Errorf("put the new agent token in force in Secret %s: %w", name, err)
	}
	r.pendingTokens.Delete(va.UID)
	r.rotations.Store(va.UID, want)
	obs.agentTokenRotation = want
	r.event(va, corev1.EventTypeNormal, "AgentTokenRotated", "Update",
		"Rotation %q: the new agent token is in force in Secret %s; the agent pods roll onto it, and the gateways accept the previous one for spec.voice.drainTimeout plus a minute, while old pods drain", want, name)
	return 0, nil
}

func (r *VoiceAgentReconciler) tokenSettle() time.Duration {
	if r.TokenSettle > 0 {
		return r.TokenSettle
	}
	return tokenSettle
}

// adoptCertificateSecrets gives the Secrets cert-manager writes for va's Certificates
// (the gateway's CA with its private key, the gateway's and the Service's serving
// certificates) an owner reference to va, so that the garbage collector deletes them
// with it: cert-manager leaves them behind by default. Only a Secret with no owner is
// patched (with cert-manager's --enable-certificate-owner-ref, the Certificate owns it
// and is owned by va); the patch sets metadata alone and reads nothing.
func (r *VoiceAgentReconciler) adoptCertificateSecrets(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed) error {
	for _, name := range obs.unownedCertSecrets {
		ref := metav1.OwnerReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VoiceAgent", Name: va.Name, UID: va.UID}
		secret := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Namespace: va.Namespace, Name: name}}
		if err := r.patchSecret(ctx, secret, map[string]any{"metadata": map[string]any{"ownerReferences": []metav1.OwnerReference{ref}}}); err != nil {
			return fmt.Errorf("own cert-manager's Secret %s: %w", name, err)
		}
	}
	return nil
}

// certSecretNames are the Secrets cert-manager writes for VoiceAgent name: they carry
// its label (the Certificates' secretTemplate) but no owner until adopted.
func certSecretNames(namespace, name string) []string {
	va := &v1alpha1.VoiceAgent{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	return []string{render.TLSSecretName(va), render.GatewayTLSSecretName(va), render.GatewayCAName(va)}
}

// unadoptedCertSecret reports whether s is a Secret cert-manager wrote for VoiceAgent
// name that nothing owns yet.
func unadoptedCertSecret(s client.Object, name string) bool {
	if len(s.GetOwnerReferences()) > 0 || s.GetLabels()[render.LabelVoiceAgent] != name ||
		s.GetAnnotations()["cert-manager.io/certificate-name"] == "" {
		return false
	}
	return slices.Contains(certSecretNames(s.GetNamespace(), name), s.GetName())
}

// removeUnadoptedCertSecrets deletes the cert-manager Secrets of a VoiceAgent that is
// gone and never adopted them (it was deleted between its Certificate's issue and the
// reconcile that would have): nothing else would ever delete them.
func (r *VoiceAgentReconciler) removeUnadoptedCertSecrets(ctx context.Context, namespace, name string) error {
	for _, secretName := range certSecretNames(namespace, name) {
		s := &metav1.PartialObjectMetadata{}
		s.SetGroupVersionKind(secretGVK)
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: secretName}, s); err != nil {
			if isNotFound(err) {
				continue
			}
			return fmt.Errorf("get Secret metadata %s: %w", secretName, err)
		}
		if !unadoptedCertSecret(s, name) {
			continue
		}
		if err := r.Client.Delete(ctx, s, client.Preconditions{UID: ptr.To(s.UID), ResourceVersion: &s.ResourceVersion}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete cert-manager's Secret %s of deleted VoiceAgent %s: %w", secretName, name, err)
		}
		log.FromContext(ctx).Info("deleted a cert-manager Secret of a VoiceAgent that is gone", "secret", secretName)
	}
	return nil
}

// voiceAgentsForSecret maps a Secret event to the VoiceAgents that reference it, and
// to the VoiceAgent a not-yet-adopted cert-manager Secret belongs to (which may be
// gone: its reconcile then deletes the Secret).
func (r *VoiceAgentReconciler) voiceAgentsForSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	reqs := r.voiceAgentsForIndex(indexSecrets)(ctx, obj)
	if name := obj.GetLabels()[render.LabelVoiceAgent]; name != "" && unadoptedCertSecret(obj, name) {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}})
	}
	return reqs
}

func newAgentToken() (string, error) {
	raw := make([]byte, render.AgentTokenSize)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate agent token: %w", err)
	}
	return "vat_" + base64.RawURLEncoding.EncodeToString(raw), nil
}

// patchSecret merge-patches the given fields of a Secret, without reading it.
func (r *VoiceAgentReconciler) patchSecret(ctx context.Context, secret *corev1.Secret, fields map[string]any) error {
	data, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	return r.Client.Patch(ctx, secret, client.RawPatch(types.MergePatchType, data), client.FieldOwner(render.FieldOwner))
}

// ensureSecrets makes the Secrets the operator generates (the session key, the agent
// token) exist, both at once: for a new VoiceAgent they are one round trip, not two.
// It returns ensureAgentToken's wait.
func (r *VoiceAgentReconciler) ensureSecrets(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed) (time.Duration, error) {
	_, haveSessionKey := obs.secrets[render.SessionKeySecretName(va)]
	if haveSessionKey || !render.GeneratesSessionKey(va) {
		return r.ensureAgentToken(ctx, va, obs)
	}
	var (
		sessionKey *corev1.Secret
		tokenWait  time.Duration
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		sessionKey, err = r.createSessionKey(gctx, va)
		return err
	})
	g.Go(func() (err error) {
		tokenWait, err = r.ensureAgentToken(gctx, va, obs)
		return err
	})
	err := g.Wait()
	if sessionKey != nil {
		r.applies.record(sessionKey, client.ObjectKeyFromObject(va))
		obs.secrets[sessionKey.Name] = sessionKey.ResourceVersion
		obs.generated = append([]generatedSecret{{reason: "SessionKeyGenerated",
			note: fmt.Sprintf("the AES-256-GCM session key in Secret %s", sessionKey.Name)}}, obs.generated...)
	}
	return tokenWait, err
}

// createSessionKey creates the generated session key, which the operator never reads
// back: it only learns from metadata that it exists. It returns the Secret created,
// or errCacheBehind when it was there already. It touches nothing of the reconcile's
// observed state: ensureSecrets runs it beside ensureAgentToken.
func (r *VoiceAgentReconciler) createSessionKey(ctx context.Context, va *v1alpha1.VoiceAgent) (*corev1.Secret, error) {
	key := make([]byte, render.SessionKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate session key: %w", err)
	}
	secret := render.SessionKeySecret(va, key)
	if err := r.Client.Create(ctx, secret, client.FieldOwner(render.FieldOwner)); err != nil {
		if isAlreadyExists(err) {
			return nil, errCacheBehind
		}
		return nil, fmt.Errorf("create session key Secret: %w", err)
	}
	return secret, nil
}

// pruneStale deletes children of va that the spec no longer wants: the Certificate when
// TLS is turned off, an ExternalSecret of a removed integration, the PDB at one replica.
func (r *VoiceAgentReconciler) pruneStale(ctx context.Context, va *v1alpha1.VoiceAgent, obs *observed, ch *render.Children) error {
	wanted := map[string]bool{}
	for _, pdb := range []*policyv1.PodDisruptionBudget{ch.PodDisruptionBudget, ch.GatewayPodDisruptionBudget} {
		if pdb != nil {
			wanted["PodDisruptionBudget/"+pdb.Name] = true
		}
	}
	if ch.Certificate != nil {
		wanted["Certificate/"+ch.Certificate.GetName()] = true
	}
	for _, o := range ch.GatewayTLS {
		wanted[o.GetKind()+"/"+o.GetName()] = true
	}
	if ch.ScaledObject != nil {
		wanted["ScaledObject/"+ch.ScaledObject.GetName()] = true
	}
	if ch.HorizontalPodAutoscaler != nil {
		wanted["HorizontalPodAutoscaler/"+ch.HorizontalPodAutoscaler.Name] = true
	}
	for _, es := range ch.ExternalSecrets {
		wanted["ExternalSecret/"+es.GetName()] = true
	}
	kinds := []schema.GroupVersionKind{policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"),
		autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler")}
	if obs.kedaInstalled {
		kinds = append(kinds, render.ScaledObjectGVK)
	}
	if obs.certManagerInstalled {
		kinds = append(kinds, render.CertificateGVK, render.IssuerGVK)
	}
	if obs.esoInstalled {
		kinds = append(kinds, render.ExternalSecretGVK)
	}
	for _, gvk := range kinds {
		items, err := r.listChildren(ctx, va, gvk)
		if err != nil {
			return fmt.Errorf("list %s: %w", gvk.Kind, err)
		}
		for _, item := range items {
			if wanted[gvk.Kind+"/"+item.GetName()] || !metav1.IsControlledBy(item, va) {
				continue
			}
			if err := r.Client.Delete(ctx, item, client.Preconditions{UID: ptr.To(item.GetUID())}); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete %s %s: %w", gvk.Kind, item.GetName(), err)
			}
			r.event(va, corev1.EventTypeNormal, "Deleted", "Delete", "Deleted %s %s: no longer wanted by the spec", gvk.Kind, item.GetName())
		}
	}
	return nil
}

// listChildren lists va's children of one kind from the cache: the typed kinds
// through the typed informers the controller's watches started (as unstructured, each
// would be a second informer holding every PodDisruptionBudget and HPA again, as maps)
// and their index by VoiceAgent.
func (r *VoiceAgentReconciler) listChildren(ctx context.Context, va *v1alpha1.VoiceAgent, gvk schema.GroupVersionKind) ([]client.Object, error) {
	opts := []client.ListOption{client.InNamespace(va.Namespace), client.MatchingLabels{render.LabelVoiceAgent: va.Name}}
	indexed := []client.ListOption{client.InNamespace(va.Namespace), client.MatchingFields{indexVoiceAgent: va.Name}}
	var out []client.Object
	switch gvk {
	case policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"):
		list := &policyv1.PodDisruptionBudgetList{}
		if err := r.Client.List(ctx, list, indexed...); err != nil {
			return nil, err
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
	case autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler"):
		list := &autoscalingv2.HorizontalPodAutoscalerList{}
		if err := r.Client.List(ctx, list, indexed...); err != nil {
			return nil, err
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
	default:
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := r.Client.List(ctx, list, opts...); err != nil {
			return nil, err
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// replicasHandOff is the field manager that holds the agent Deployment's replicas while
// an autoscaler owns the count. Applying the Deployment without replicas would
// otherwise release the operator's ownership and so reset the count to 1 (calls cut)
// until the autoscaler acts: the count is first given to this manager, at its current
// value (the autoscaler's minimum for a new Deployment), and then left to the
// autoscaler, whose updates take it over.
const replicasHandOff = render.FieldOwner + "-autoscaling-handoff"

// handOffReplicas gives the agent Deployment's replicas to replicasHandOff when the
// operator still owns them or the Deployment is new; at rest it writes nothing. It
// says whether the operator owned them (handedOff), and whether the Deployment is not
// there yet (pending: the reconcile its create starts hands them off).
func (r *VoiceAgentReconciler) handOffReplicas(ctx context.Context, want *appsv1.Deployment, va *v1alpha1.VoiceAgent) (handedOff, pending bool, err error) {
	live := &appsv1.Deployment{}
	err = r.Client.Get(ctx, client.ObjectKeyFromObject(want), live)
	switch {
	case isNotFound(err):
		// Created below without replicas (so 1); the minimum follows at once.
		return false, true, nil
	case err != nil:
		return false, false, fmt.Errorf("get Deployment %s: %w", want.Name, err)
	}
	replicas := ptr.Deref(live.Spec.Replicas, 1)
	owned := render.OwnsField(live.ManagedFields, render.FieldOwner, "f:spec", "f:replicas")
	if !owned {
		if render.OwnsField(live.ManagedFields, "", "f:spec", "f:replicas") {
			return false, false, nil // someone else (the autoscaler, or this hand-off) holds it
		}
		replicas = max(replicas, render.MinAgentReplicas(va))
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": want.Name, "namespace": want.Namespace},
		"spec":     map[string]any{"replicas": int64(replicas)},
	}}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(replicasHandOff), client.ForceOwnership); err != nil {
		return false, false, fmt.Errorf("hand the replicas of Deployment %s to the autoscaler: %w", want.Name, err)
	}
	return owned, false, nil
}

// SetupWithManager registers the controller, its watches and field indexes.
func (r *VoiceAgentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	if r.APIReader == nil {
		return errNoAPIReader
	}
	if err := registerMetrics(mgr); err != nil {
		return err
	}
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.VoiceAgent{}, indexSecrets, func(o client.Object) []string {
		return referencedSecrets(o.(*v1alpha1.VoiceAgent))
	}); err != nil {
		return fmt.Errorf("index VoiceAgents by referenced Secret: %w", err)
	}
	if err := idx.IndexField(ctx, &v1alpha1.VoiceAgent{}, indexAuditSinks, func(o client.Object) []string {
		return referencedSinks(o.(*v1alpha1.VoiceAgent))
	}); err != nil {
		return fmt.Errorf("index VoiceAgents by referenced AuditSink: %w", err)
	}
	for _, obj := range []client.Object{&policyv1.PodDisruptionBudget{}, &autoscalingv2.HorizontalPodAutoscaler{}} {
		if err := idx.IndexField(ctx, obj, indexVoiceAgent, func(o client.Object) []string {
			if name := o.GetLabels()[render.LabelVoiceAgent]; name != "" {
				return []string{name}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("index %T by VoiceAgent: %w", obj, err)
		}
	}
	r.optional = newOptionalAPIs(mgr.GetCache())

	// Status the reconciler neither reads nor writes starts no reconcile: its own status
	// writes on the VoiceAgent, kube-controller-manager's on the PodDisruptionBudgets
	// (each pod change) and HorizontalPodAutoscalers (every 15 s).
	//
	// Nor does the event of a child or generated Secret a reconcile just wrote, the
	// very object its apply or create returned (ownApplies).
	notStatusOnly := builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return metadataOrSpecChanged(e.ObjectOld, e.ObjectNew)
	}})
	owner := r.applies.handler(handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.VoiceAgent{}, handler.OnlyControllerOwner()),
		controllingVoiceAgent)
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.VoiceAgent{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: voiceAgentChanged})).
		Watches(&corev1.ServiceAccount{}, owner).
		Watches(&corev1.ConfigMap{}, owner).
		Watches(&corev1.Service{}, owner).
		Watches(&appsv1.Deployment{}, owner).
		Watches(&networkingv1.NetworkPolicy{}, owner).
		Watches(&policyv1.PodDisruptionBudget{}, owner, notStatusOnly).
		Watches(&autoscalingv2.HorizontalPodAutoscaler{}, owner, notStatusOnly).
		WatchesMetadata(&corev1.Secret{}, r.applies.handler(handler.EnqueueRequestsFromMapFunc(r.voiceAgentsForSecret), soleMapped(r.voiceAgentsForSecret))).
		Watches(&v1alpha1.AuditSink{}, handler.EnqueueRequestsFromMapFunc(r.voiceAgentsForIndex(indexAuditSinks))).
		WatchesMetadata(&apiextensionsv1.CustomResourceDefinition{}, handler.EnqueueRequestsFromMapFunc(r.allVoiceAgentsOnCRD)).
		// A standby starts this controller's watches before it leads (warm-up), so that
		// a hand-over does not wait for 1,000 VoiceAgents' children to be listed (8.2 s
		// from the leader's SIGTERM to the standby's workers without, 6.6 s with). Its
		// event handlers only read the cache. Not the AuditSink controller: its pod
		// handler records shutdown losses, which a standby must not.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1), EnableWarmup: ptr.To(true)}).
		Named("voiceagent").
		Build(r)
	if err != nil {
		return fmt.Errorf("build the VoiceAgent controller: %w", err)
	}
	r.optional.startWatch = watchStarter(c, mgr, owner)
	return nil
}

// voiceAgentChanged passes a VoiceAgent update that a reconcile acts on: its spec
// (generation), metadata (the rotation annotation, deletion) or status.spend (carried
// into the gateway config); not the conditions and counts the reconciler wrote itself.
func voiceAgentChanged(e event.UpdateEvent) bool {
	oldVA, okOld := e.ObjectOld.(*v1alpha1.VoiceAgent)
	newVA, okNew := e.ObjectNew.(*v1alpha1.VoiceAgent)
	if !okOld || !okNew {
		return true
	}
	return metadataOrSpecChanged(oldVA, newVA) || !equality.Semantic.DeepEqual(oldVA.Status.Spend, newVA.Status.Spend)
}

// metadataOrSpecChanged is false for an update of status alone (and of what the API
// server keeps with it: resourceVersion, managedFields).
func metadataOrSpecChanged(oldObj, newObj client.Object) bool {
	return oldObj.GetGeneration() != newObj.GetGeneration() ||
		!maps.Equal(oldObj.GetLabels(), newObj.GetLabels()) ||
		!maps.Equal(oldObj.GetAnnotations(), newObj.GetAnnotations()) ||
		!equality.Semantic.DeepEqual(oldObj.GetOwnerReferences(), newObj.GetOwnerReferences()) ||
		!slices.Equal(oldObj.GetFinalizers(), newObj.GetFinalizers()) ||
		!oldObj.GetDeletionTimestamp().Equal(newObj.GetDeletionTimestamp())
}

// watchStarter starts a watch on an optional kind once its CRD is found.
func watchStarter(c controller.Controller, mgr ctrl.Manager, h handler.EventHandler) func(schema.GroupVersionKind) error {
	return func(gvk schema.GroupVersionKind) error {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		if err := c.Watch(source.Kind[client.Object](mgr.GetCache(), u, h)); err != nil {
			return fmt.Errorf("watch %s: %w", gvk.Kind, err)
		}
		return nil
	}
}

func (r *VoiceAgentReconciler) voiceAgentsForIndex(index string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		list := &v1alpha1.VoiceAgentList{}
		if err := r.Client.List(ctx, list, client.InNamespace(obj.GetNamespace()),
			client.MatchingFields{index: obj.GetName()}); err != nil {
			log.FromContext(ctx).Error(err, "list VoiceAgents by index", "index", index)
			return nil
		}
		return requestsFor(list.Items)
	}
}

// allVoiceAgentsOnCRD re-reconciles every VoiceAgent when cert-manager's or External
// Secrets' CRD appears or goes, so that their conditions follow.
func (r *VoiceAgentReconciler) allVoiceAgentsOnCRD(ctx context.Context, obj client.Object) []reconcile.Request {
	if n := obj.GetName(); n != render.CertificateCRD && n != render.ExternalSecretCRD && n != render.ScaledObjectCRD {
		return nil
	}
	list := &v1alpha1.VoiceAgentList{}
	if err := r.Client.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "list VoiceAgents")
		return nil
	}
	return requestsFor(list.Items)
}

func requestsFor(items []v1alpha1.VoiceAgent) []reconcile.Request {
	out := make([]reconcile.Request, 0, len(items))
	for _, va := range items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: va.Namespace, Name: va.Name}})
	}
	return out
}

func referencedSecrets(va *v1alpha1.VoiceAgent) []string {
	names := render.SecretNames(render.Credentials(va, nil))
	names = append(names, render.SessionKeySecretName(va), render.TLSSecretName(va),
		render.AgentTokenSecretName(va), render.GatewayTLSSecretName(va), render.GatewayCAName(va))
	return names
}

func referencedSinks(va *v1alpha1.VoiceAgent) []string {
	if va.Spec.Audit == nil {
		return nil
	}
	out := make([]string, 0, len(va.Spec.Audit.SinkRefs))
	for _, s := range va.Spec.Audit.SinkRefs {
		out = append(out, s.Name)
	}
	return out
}
