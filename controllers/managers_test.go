package controllers

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
)

func TestSpecManagers(t *testing.T) {
	at := func(min int) *metav1.Time {
		v := metav1.NewTime(time.Date(2026, 11, 1, 10, min, 0, 0, time.UTC))
		return &v
	}
	fields := func(s string) *metav1.FieldsV1 { return &metav1.FieldsV1{Raw: []byte(s)} }
	tests := []struct {
		name    string
		entries []metav1.ManagedFieldsEntry
		want    []string
	}{
		{"none", nil, []string{}},
		{"newest first, apply marked", []metav1.ManagedFieldsEntry{
			{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(1), FieldsV1: fields(`{"f:spec":{"f:replicas":{}}}`)},
			{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply, Time: at(5), FieldsV1: fields(`{"f:spec":{"f:model":{}}}`)},
		}, []string{"argocd-controller (apply)", "kubectl-client-side-apply"}},
		{"status and metadata-only managers are not spec authors", []metav1.ManagedFieldsEntry{
			{Manager: "voiceagent-operator", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", Time: at(9), FieldsV1: fields(`{"f:status":{}}`)},
			{Manager: "kubectl-label", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(8), FieldsV1: fields(`{"f:metadata":{"f:labels":{}}}`)},
			{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate, Time: at(2), FieldsV1: fields(`{"f:spec":{}}`)},
		}, []string{"kubectl-edit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := specManagers(tt.entries); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

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
