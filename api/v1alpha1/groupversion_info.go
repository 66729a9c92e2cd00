// Package v1alpha1 holds the voiceagent.dev/v1alpha1 API: VoiceAgent, which declares one
// LLM voice agent and the security controls the cluster must enforce around it, and
// AuditSink, a destination for the agent's audit trail.
//
// +kubebuilder:object:generate=true
// +groupName=voiceagent.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "voiceagent.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers every kind of this package, and the list of each, under
// GroupVersion (with the meta/v1 types a group version needs: ListOptions and the rest).
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&VoiceAgent{}, &VoiceAgentList{},
		&AuditSink{}, &AuditSinkList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
