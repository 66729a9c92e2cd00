package render

import (
	"path"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// The gateway runs in pods of its own, because containers of one pod share one network
// namespace and so one NetworkPolicy: a sidecar's egress would be the agent's. These
// pods hold every provider and integration credential and are the VoiceAgent's only
// way out of the cluster; the agent pods reach them on the proxy port with the agent
// token as their API key.

// GatewayDeployment runs va's gateway pods.
func GatewayDeployment(va *v1alpha1.VoiceAgent, in DeploymentInputs) *appsv1.Deployment {
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: gatewayLabels(va)},
		Spec:       GatewayPodSpec(va, in),
	}
	return deployment(gatewayObjectMeta(va, GatewayName(va)), GatewayReplicas(va), GatewaySelectorLabels(va.Name), tmpl)
}

// GatewayPodSpec is the gateway pod of va.
func GatewayPodSpec(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.PodSpec {
	spec := restrictedPodSpec(GatewayName(va), TerminationGracePeriodSeconds(va))
	spec.Containers = []corev1.Container{gatewayContainer(va, in)}
	spec.Volumes = gatewayVolumes(va, in)
	spec.Affinity = spreadOverNodes(GatewayReplicas(va), GatewaySelectorLabels(va.Name))
	return spec
}

// GatewayResources are the gateway container's defaults: its body buffers are bounded
// to fit in the memory limit.
func GatewayResources(va *v1alpha1.VoiceAgent) corev1.ResourceRequirements {
	if g := va.Spec.Gateway; g != nil && g.Resources != nil {
		return *g.Resources
	}
	return resources("50m", "64Mi", "256Mi", "64Mi", "576Mi")
}

func gatewayContainer(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.Container {
	mounts := []corev1.VolumeMount{
		{Name: "gateway-config", MountPath: gw.MountDir, ReadOnly: true},
		{Name: "gateway-state", MountPath: gw.StateDir},
		{Name: "agent-token", MountPath: gw.AgentTokenDir, ReadOnly: true},
	}
	if in.GatewayTLS {
		mounts = append(mounts, corev1.VolumeMount{Name: "proxy-tls", MountPath: gw.ProxyTLSDir, ReadOnly: true})
	}
	for _, c := range in.Credentials {
		if !c.InAgent {
			mounts = append(mounts, corev1.VolumeMount{Name: c.VolumeName(), MountPath: c.MountDir(), ReadOnly: true})
		}
	}
	return corev1.Container{
		Name:            GatewayContainer,
		Image:           in.GatewayImage,
		ImagePullPolicy: pullPolicy(in.GatewayImage),
		Args: []string{"gateway", "--config", path.Join(gw.MountDir, gw.FileName),
			"--termination-log", corev1.TerminationMessagePathDefault},
		// The termination message carries what the gateway could not deliver at exit
		// (gateway.ShutdownReport), which the operator reads from the pod's status.
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"},
		}}},
		Ports: []corev1.ContainerPort{
			{Name: "proxy", ContainerPort: gw.ProxyPort, Protocol: corev1.ProtocolTCP},
			{Name: "admin", ContainerPort: gw.AdminPort, Protocol: corev1.ProtocolTCP},
		},
		Resources:       GatewayResources(va),
		VolumeMounts:    mounts,
		SecurityContext: restrictedContainerSecurity(ptr.To[int64](GatewayUID)),
		LivenessProbe:   adminProbe("/healthz", 10),
		ReadinessProbe:  adminProbe("/readyz", 5),
	}
}

func gatewayVolumes(va *v1alpha1.VoiceAgent, in DeploymentInputs) []corev1.Volume {
	vols := []corev1.Volume{
		{Name: "gateway-state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("512Mi"))}}},
		{Name: "gateway-config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(va)},
			DefaultMode:          ptr.To[int32](0o444),
		}}},
		// Every key: token, and next while a rotation announces one.
		secretVolume("agent-token", AgentTokenSecretName(va), "", ""),
	}
	for _, c := range in.Credentials {
		if !c.InAgent {
			vols = append(vols, secretVolume(c.VolumeName(), c.SecretName, c.SecretKey, gw.CredentialFile))
		}
	}
	if in.GatewayTLS {
		vols = append(vols, secretVolume("proxy-tls", GatewayTLSSecretName(va), "", ""))
	}
	return vols
}

// GatewayServiceAccount is the gateway pods' identity, with no API token mounted.
func GatewayServiceAccount(va *v1alpha1.VoiceAgent) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   gatewayObjectMeta(va, GatewayName(va)),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// GatewayService is the address the agent pods call: the proxy port only (the admin
// port is reached pod by pod by the operator and the metrics scrapers).
func GatewayService(va *v1alpha1.VoiceAgent) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: gatewayObjectMeta(va, GatewayName(va)),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: GatewaySelectorLabels(va.Name),
			Ports: []corev1.ServicePort{{
				Name: "proxy", Port: gw.ProxyPort, TargetPort: intstr.FromString("proxy"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// GatewayPodDisruptionBudget keeps all but one gateway replica up through voluntary
// disruptions; with one replica it would block node drains, so there is none.
func GatewayPodDisruptionBudget(va *v1alpha1.VoiceAgent) *policyv1.PodDisruptionBudget {
	if GatewayReplicas(va) <= 1 {
		return nil
	}
	return pdb(gatewayObjectMeta(va, GatewayName(va)), GatewaySelectorLabels(va.Name))
}

// Keys of the agent token's Secret: token, the one in force, mounted into both
// workloads; next, a rotation's announced token, only while one is in progress and
// only in the gateway pods.
const (
	AgentTokenKey     = "token"
	AgentNextTokenKey = "next"
)

// AnnotationAgentTokenAnnounced on the agent token's Secret records the rotation whose
// token is announced under next and not yet in force.
const AnnotationAgentTokenAnnounced = "voiceagent.dev/agent-token-announced"

// AgentTokenSize is the agent token's length in random bytes before encoding.
const AgentTokenSize = 32

// AgentTokenSecret wraps a freshly generated agent token. The operator writes it and
// never reads it back; a rotation patches in a new one (see the controller's
// ensureAgentToken), recording the request it answers (AnnotationRotateAgentToken).
func AgentTokenSecret(va *v1alpha1.VoiceAgent, token, rotation string) *corev1.Secret {
	meta := objectMeta(va, AgentTokenSecretName(va))
	meta.Annotations = map[string]string{AnnotationRotateAgentToken: rotation}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta,
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{AgentTokenKey: []byte(token)},
	}
}
