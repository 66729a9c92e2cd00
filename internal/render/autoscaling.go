package render

import (
	"fmt"
	"strconv"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// KEDA is an optional dependency, discovered like cert-manager.
var ScaledObjectGVK = schema.GroupVersionKind{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}

// ScaledObjectCRD is KEDA's CRD, for discovery.
const ScaledObjectCRD = "scaledobjects.keda.sh"

// DefaultPrometheusAddress is where KEDA reads the gateways' metrics unless the
// operator is told otherwise (the Prometheus Operator's default Service).
const DefaultPrometheusAddress = "http://prometheus-operated.monitoring.svc:9090"

// Autoscaling defaults.
const (
	defaultCPUTarget = 70
	// A call lasts minutes: scale down at most one pod a minute, and only after ten
	// minutes below target, so that a dip between calls does not drain pods that the
	// next minute needs (each drain waits for its calls, up to spec.voice.drainTimeout).
	scaleDownWindowSeconds = 600
	scaleDownPodsPerMinute = 1
)

// Autoscaled says whether the autoscaler, not the operator, owns the agent
// Deployment's replica count.
func Autoscaled(va *v1alpha1.VoiceAgent) bool { return va.Spec.Autoscaling != nil }

// MinAgentReplicas is the fewest agent pods va runs.
func MinAgentReplicas(va *v1alpha1.VoiceAgent) int32 {
	if a := va.Spec.Autoscaling; a != nil {
		return max(a.MinReplicas, 1)
	}
	return Replicas(va)
}

// maxAgentReplicas is the most agent pods va runs.
func maxAgentReplicas(va *v1alpha1.VoiceAgent) int32 {
	if a := va.Spec.Autoscaling; a != nil {
		return max(a.MaxReplicas, MinAgentReplicas(va))
	}
	return Replicas(va)
}

// ActiveSessionsQuery is the PromQL KEDA scales on: the realtime sessions in progress
// on all of va's gateways (the gateway PodMonitor adds the voiceagent label).
func ActiveSessionsQuery(va *v1alpha1.VoiceAgent) string {
	return fmt.Sprintf(`sum(voiceagent_gateway_active_sessions{namespace=%q,voiceagent=%q}) or vector(0)`, va.Namespace, va.Name)
}

func scaleDownBehavior() *autoscalingv2.HorizontalPodAutoscalerBehavior {
	return &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr.To[int32](scaleDownWindowSeconds),
		Policies: []autoscalingv2.HPAScalingPolicy{{
			Type: autoscalingv2.PodsScalingPolicy, Value: scaleDownPodsPerMinute, PeriodSeconds: 60,
		}},
	}}
}

// ScaledObject asks KEDA to scale the agent Deployment on the sessions in progress,
// and on CPU too when a CPU target is set.
func ScaledObject(va *v1alpha1.VoiceAgent, prometheus string) *unstructured.Unstructured {
	a := va.Spec.Autoscaling
	if a == nil {
		return nil
	}
	if prometheus == "" {
		prometheus = DefaultPrometheusAddress
	}
	target := a.TargetActiveSessionsPerReplica
	if target < 1 {
		target = 10
	}
	triggers := []any{map[string]any{
		"type": "prometheus", "name": "active-sessions", "metricType": "AverageValue",
		"metadata": map[string]any{
			"serverAddress": prometheus,
			"query":         ActiveSessionsQuery(va),
			"threshold":     strconv.Itoa(int(target)),
		},
	}}
	if cpu := a.TargetCPUUtilizationPercentage; cpu != nil {
		triggers = append(triggers, map[string]any{
			"type": "cpu", "name": "cpu", "metricType": "Utilization",
			"metadata": map[string]any{"value": strconv.Itoa(int(*cpu))},
		})
	}
	// A struct of plain fields, which the converter cannot fail on.
	behavior, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(scaleDownBehavior())
	spec := map[string]any{
		"scaleTargetRef":  map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": va.Name},
		"minReplicaCount": int64(MinAgentReplicas(va)),
		"maxReplicaCount": int64(maxAgentReplicas(va)),
		"advanced": map[string]any{"horizontalPodAutoscalerConfig": map[string]any{
			"name":     va.Name,
			"behavior": behavior,
		}},
		"triggers": triggers,
	}
	return newUnstructured(ScaledObjectGVK, metaMap(va, va.Name), spec)
}

// HorizontalPodAutoscaler scales the agent Deployment on CPU, where KEDA is missing.
func HorizontalPodAutoscaler(va *v1alpha1.VoiceAgent) *autoscalingv2.HorizontalPodAutoscaler {
	a := va.Spec.Autoscaling
	if a == nil {
		return nil
	}
	cpu := int32(defaultCPUTarget)
	if a.TargetCPUUtilizationPercentage != nil {
		cpu = *a.TargetCPUUtilizationPercentage
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: objectMeta(va, va.Name),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: va.Name},
			MinReplicas:    ptr.To(MinAgentReplicas(va)),
			MaxReplicas:    maxAgentReplicas(va),
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{Name: "cpu", Target: autoscalingv2.MetricTarget{
					Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To(cpu),
				}},
			}},
			Behavior: scaleDownBehavior(),
		},
	}
}
