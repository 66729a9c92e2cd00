package render

import (
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

// PodDisruptionBudget keeps all but one agent replica up through voluntary
// disruptions. It is only wanted with more than one replica (at the autoscaler's
// minimum, when it scales): with one it would block node drains.
func PodDisruptionBudget(va *v1alpha1.VoiceAgent) *policyv1.PodDisruptionBudget {
	if MinAgentReplicas(va) <= 1 {
		return nil
	}
	return pdb(objectMeta(va, va.Name), SelectorLabels(va))
}

func pdb(meta metav1.ObjectMeta, selector map[string]string) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta,
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: selector},
		},
	}
}
