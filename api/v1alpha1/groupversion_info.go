// Package v1alpha1 holds the voiceagent.dev/v1alpha1 API: VoiceAgent, which declares one
// LLM voice agent and the security controls the cluster must enforce around it, and
// AuditSink, a destination for the agent's audit trail.
//
// +kubebuilder:object:generate=true
// +groupName=voiceagent.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "voiceagent.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
