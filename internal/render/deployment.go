package render

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// GatewayUID is the non-root user the gateway runs as (distroless "nonroot").
const GatewayUID = 65532

// Paths inside the agent container.
const (
	SessionKeyDir  = "/var/run/voiceagent/session-key"
	SessionKeyFile = SessionKeyDir + "/key"
	agentTmpDir    = "/tmp"
)

// DeploymentInputs are the observed facts the Deployment depends on.
type DeploymentInputs struct {
	GatewayImage string
	Credentials  []Credential
	// AgentSecretVersions maps each Secret mounted into the agent container to its
	// resourceVersion, read from metadata only. A change rolls the pods.
	AgentSecretVersions map[string]string
}

// Deployment runs the agent and its gateway sidecar. Both containers meet Pod Security
// Standards "restricted", with a read-only root filesystem; provider and integration
// credentials are mounted read-only into the gateway alone.
func Deployment(va *v1alpha1.VoiceAgent, in DeploymentInputs) *appsv1.Deployment {
	replicas := Replicas(va)
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      Labels(va),
			Annotations: map[string]string{AnnotationRestartHash: restartHash(in.AgentSecretVersions)},
		},
		Spec: PodSpec(va, in),
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(va, va.Name),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: SelectorLabels(va)},
			Template: tmpl,
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			RevisionHistoryLimit: ptr.To[int32](5),
		},
	}
}

// restartHash is a stable digest of the versions of the Secrets the agent reads.
func restartHash(versions map[string]string) string {
	keys := make([]string, 0, len(versions))
	for k := range versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k + "=" + versions[k] + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// DefaultDrainTimeout is how long calls in progress may run on after SIGTERM when
// spec.voice.drainTimeout is not set.
const DefaultDrainTimeout = 10 * time.Minute

// DrainTimeout is va's spec.voice.drainTimeout or the default.
func DrainTimeout(va *v1alpha1.VoiceAgent) time.Duration {
	if v := va.Spec.Voice; v != nil && v.DrainTimeout != nil {
		return v.DrainTimeout.Duration
	}
	return DefaultDrainTimeout
}

// drainMargin is the time after the drain the gateway has to deliver its audit backlog
// and persist spend before the kubelet's SIGKILL.
const drainMargin = 30 * time.Second

// TerminationGracePeriodSeconds follows the drain timeout, so that the kubelet never
// kills a pod whose calls are still draining.
func TerminationGracePeriodSeconds(va *v1alpha1.VoiceAgent) int64 {
	return int64((DrainTimeout(va) + drainMargin + time.Second - 1) / time.Second)
}

// PodSpec is the pod of va.
func PodSpec(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.PodSpec {
	spec := corev1.PodSpec{
		ServiceAccountName:           va.Name,
		AutomountServiceAccountToken: ptr.To(false),
		EnableServiceLinks:           ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			FSGroup:        ptr.To[int64](GatewayUID),
		},
		TerminationGracePeriodSeconds: ptr.To(TerminationGracePeriodSeconds(va)),
		Containers:                    []corev1.Container{agentContainer(va, in), gatewayContainer(va, in)},
		Volumes:                       volumes(va, in.Credentials),
	}
	if Replicas(va) > 1 {
		spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 100,
				PodAffinityTerm: corev1.PodAffinityTerm{
					TopologyKey:   corev1.LabelHostname,
					LabelSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(va)},
				},
			}},
		}}
	}
	return spec
}

func restrictedContainerSecurity(uid *int64) *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                uid,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func agentContainer(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.Container {
	proxy := "http://127.0.0.1:" + itoa32(gw.ProxyPort)
	env := []corev1.EnvVar{
		{Name: "PORT", Value: itoa32(AgentPort(va))},
		{Name: "VOICEAGENT_GATEWAY_URL", Value: proxy},
		{Name: "VOICEAGENT_MODEL_URL", Value: proxy + "/model"},
		{Name: "VOICEAGENT_SESSION_KEY_FILE", Value: SessionKeyFile},
	}
	for _, i := range va.Spec.Integrations {
		prefix := "VOICEAGENT_INTEGRATION_" + envName(i.Name)
		if i.Type == v1alpha1.IntegrationDatabase {
			env = append(env,
				corev1.EnvVar{Name: prefix + "_HOST", Value: i.Host},
				corev1.EnvVar{Name: prefix + "_PORT", Value: itoa32(int32Or(i.Port, 0))})
			if i.Credentials != nil {
				env = append(env, corev1.EnvVar{Name: prefix + "_CREDENTIALS_FILE", Value: Credential{Slot: integrationSlot(i)}.File()})
			}
			continue
		}
		env = append(env, corev1.EnvVar{Name: prefix + "_URL", Value: proxy + "/integrations/" + i.Name + "/"})
	}
	env = append(env, userEnv(va.Spec.Env)...)

	mounts := []corev1.VolumeMount{
		{Name: "tmp", MountPath: agentTmpDir},
		{Name: "session-key", MountPath: SessionKeyDir, ReadOnly: true},
	}
	for _, c := range in.Credentials {
		if c.InAgent && c.Slot != "session-key" {
			mounts = append(mounts, corev1.VolumeMount{Name: c.VolumeName(), MountPath: c.MountDir(), ReadOnly: true})
		}
	}
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	}
	if va.Spec.Resources != nil {
		resources = *va.Spec.Resources
	}
	return corev1.Container{
		Name:            AgentContainer,
		Image:           va.Spec.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Ports:           []corev1.ContainerPort{{Name: "agent", ContainerPort: AgentPort(va), Protocol: corev1.ProtocolTCP}},
		Env:             env,
		Resources:       resources,
		VolumeMounts:    mounts,
		SecurityContext: restrictedContainerSecurity(nil),
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("agent")}},
			PeriodSeconds: 10,
		},
	}
}

func gatewayContainer(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.Container {
	mounts := []corev1.VolumeMount{
		{Name: "gateway-config", MountPath: gw.MountDir, ReadOnly: true},
		{Name: "gateway-state", MountPath: gw.StateDir},
	}
	if TLSEnabled(va) {
		mounts = append(mounts, corev1.VolumeMount{Name: "tls", MountPath: gw.TLSDir, ReadOnly: true})
	}
	for _, c := range in.Credentials {
		if !c.InAgent {
			mounts = append(mounts, corev1.VolumeMount{Name: c.VolumeName(), MountPath: c.MountDir(), ReadOnly: true})
		}
	}
	ports := []corev1.ContainerPort{{Name: "admin", ContainerPort: gw.AdminPort, Protocol: corev1.ProtocolTCP}}
	if TLSEnabled(va) {
		ports = append([]corev1.ContainerPort{{Name: "https", ContainerPort: gw.TLSPort, Protocol: corev1.ProtocolTCP}}, ports...)
	}
	return corev1.Container{
		Name:            GatewayContainer,
		Image:           in.GatewayImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"gateway", "--config", path.Join(gw.MountDir, gw.FileName)},
		Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"},
		}}},
		Ports: ports,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		VolumeMounts:    mounts,
		SecurityContext: restrictedContainerSecurity(ptr.To[int64](GatewayUID)),
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("admin")}},
			PeriodSeconds: 10,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("admin")}},
			PeriodSeconds: 5,
		},
	}
}

func volumes(va *v1alpha1.VoiceAgent, creds []Credential) []corev1.Volume {
	vols := []corev1.Volume{
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("256Mi"))}}},
		{Name: "gateway-state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("512Mi"))}}},
		{Name: "gateway-config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(va)},
			DefaultMode:          ptr.To[int32](0o444),
		}}},
	}
	sessionKey := secretVolume("session-key", SessionKeySecretName(va), "key", "key")
	for _, c := range creds {
		if c.Slot == "session-key" {
			sessionKey = secretVolume("session-key", c.SecretName, c.SecretKey, "key")
			continue
		}
		vols = append(vols, secretVolume(c.VolumeName(), c.SecretName, c.SecretKey, gw.CredentialFile))
	}
	vols = append(vols, sessionKey)
	if TLSEnabled(va) {
		vols = append(vols, secretVolume("tls", TLSSecretName(va), "", ""))
	}
	return vols
}

// secretVolume mounts one key of a Secret as a file readable by the pod's group only,
// or the whole Secret when key is empty.
func secretVolume(volume, secret, key, file string) corev1.Volume {
	src := &corev1.SecretVolumeSource{SecretName: secret, DefaultMode: ptr.To[int32](0o440)}
	if key != "" {
		src.Items = []corev1.KeyToPath{{Key: key, Path: file}}
	}
	return corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{Secret: src}}
}

func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

func itoa32(i int32) string { return strconv.Itoa(int(i)) }

// userEnv converts the user's plain settings. secretKeyRef never gets here: the API
// server rejects it.
func userEnv(in []v1alpha1.EnvVar) []corev1.EnvVar {
	out := make([]corev1.EnvVar, 0, len(in))
	for _, e := range in {
		ev := corev1.EnvVar{Name: e.Name, Value: e.Value}
		if f := e.ValueFrom; f != nil {
			ev.ValueFrom = &corev1.EnvVarSource{ConfigMapKeyRef: f.ConfigMapKeyRef, FieldRef: f.FieldRef, ResourceFieldRef: f.ResourceFieldRef}
		}
		out = append(out, ev)
	}
	return out
}
