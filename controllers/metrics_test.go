package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

func TestCountConditions(t *testing.T) {
	va := func(conds ...metav1.Condition) v1alpha1.VoiceAgent {
		return v1alpha1.VoiceAgent{Status: v1alpha1.VoiceAgentStatus{Conditions: conds}}
	}
	got := countConditions([]v1alpha1.VoiceAgent{
		va(metav1.Condition{Type: "Ready", Status: "True"}, metav1.Condition{Type: "AuditReady", Status: "True"}),
		va(metav1.Condition{Type: "Ready", Status: "False"}),
		va(),
	})
	if got["Ready"]["True"] != 1 || got["Ready"]["False"] != 1 || got["Ready"]["Unknown"] != 1 {
		t.Errorf("Ready: %v", got["Ready"])
	}
	if got["AuditReady"]["True"] != 1 || got["AuditReady"]["Unknown"] != 2 {
		t.Errorf("AuditReady: %v", got["AuditReady"])
	}
	if got["Available"]["Unknown"] != 3 || got["Available"]["True"] != 0 {
		t.Errorf("Available: %v", got["Available"])
	}
}
