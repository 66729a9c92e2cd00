package render

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
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

// DeploymentInputs are the observed facts the Deployments depend on.
type DeploymentInputs struct {
	GatewayImage string
	Credentials  []Credential
	// AgentSecretVersions maps each Secret mounted into the agent container to its
	// resourceVersion, read from metadata only. A change rolls the agent pods.
	AgentSecretVersions map[string]string
	// GatewayTLS: the agent reaches its gateway over TLS (cert-manager is installed).
	GatewayTLS bool
}

// Deployment runs the agent: its container, and, when the Service serves TLS, the
// inbound TLS role of the gateway binary as a native sidecar that holds the Service's
// certificate and nothing else. The agent pods hold no provider or integration
// credential and have no way out but their gateway (see NetworkPolicy).
func Deployment(va *v1alpha1.VoiceAgent, in DeploymentInputs) *appsv1.Deployment {
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      Labels(va),
			Annotations: map[string]string{AnnotationRestartHash: restartHash(in.AgentSecretVersions)},
		},
		Spec: PodSpec(va, in),
	}
	d := deployment(objectMeta(va, va.Name), Replicas(va), SelectorLabels(va), tmpl)
	if Autoscaled(va) {
		// The autoscaler owns the count: an applied replicas would undo its every move.
		d.Spec.Replicas = nil
	}
	return d
}

// deployment is a rolling Deployment that never takes a ready replica away before its
// successor is ready: calls last minutes.
func deployment(meta metav1.ObjectMeta, replicas int32, selector map[string]string, tmpl corev1.PodTemplateSpec) *appsv1.Deployment {
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
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

// PodSpec is the agent pod of va.
func PodSpec(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.PodSpec {
	spec := restrictedPodSpec(va.Name, TerminationGracePeriodSeconds(va))
	spec.Containers = []corev1.Container{agentContainer(va, in)}
	if TLSEnabled(va) {
		spec.InitContainers = []corev1.Container{inboundContainer(va, in)}
	}
	spec.Volumes = agentVolumes(va, in)
	spec.Affinity = spreadOverNodes(maxAgentReplicas(va), SelectorLabels(va))
	return spec
}

// restrictedPodSpec is the pod-level part every rendered pod shares: Pod Security
// "restricted", a fixed non-root user and group, no API token, no service links.
func restrictedPodSpec(serviceAccount string, grace int64) corev1.PodSpec {
	return corev1.PodSpec{
		ServiceAccountName:           serviceAccount,
		AutomountServiceAccountToken: ptr.To(false),
		EnableServiceLinks:           ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](GatewayUID),
			RunAsGroup:     ptr.To[int64](GatewayUID),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			FSGroup:        ptr.To[int64](GatewayUID),
		},
		TerminationGracePeriodSeconds: ptr.To(grace),
	}
}

// spreadOverNodes prefers one replica per node, so that a node's loss takes one.
func spreadOverNodes(replicas int32, selector map[string]string) *corev1.Affinity {
	if replicas <= 1 {
		return nil
	}
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				TopologyKey:   corev1.LabelHostname,
				LabelSelector: &metav1.LabelSelector{MatchLabels: selector},
			},
		}},
	}}
}

// pullPolicy pulls a tag every time (it may have moved) and a digest once.
func pullPolicy(image string) corev1.PullPolicy {
	if strings.Contains(image, "@sha256:") {
		return corev1.PullIfNotPresent
	}
	return corev1.PullAlways
}

// resources with ephemeral storage bounded too, so that a container writing logs or
// temporary files cannot fill its node's disk.
func resources(cpu, memory, memoryLimit, storage, storageLimit string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory),
			corev1.ResourceEphemeralStorage: resource.MustParse(storage),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory:           resource.MustParse(memoryLimit),
			corev1.ResourceEphemeralStorage: resource.MustParse(storageLimit),
		},
	}
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

// GatewayURL is the base URL the agent reaches its gateway at.
func GatewayURL(va *v1alpha1.VoiceAgent, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + GatewayHost(va) + ":" + itoa32(gw.ProxyPort)
}

func agentContainer(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.Container {
	base := GatewayURL(va, in.GatewayTLS)
	env := []corev1.EnvVar{
		{Name: "PORT", Value: itoa32(AgentPort(va))},
		{Name: "VOICEAGENT_GATEWAY_URL", Value: base},
		{Name: "VOICEAGENT_MODEL_URL", Value: base + "/model"},
		{Name: "VOICEAGENT_AGENT_TOKEN_FILE", Value: gw.AgentTokenFile},
		{Name: "VOICEAGENT_SESSION_KEY_FILE", Value: SessionKeyFile},
	}
	if in.GatewayTLS {
		// The CA of the gateway's certificate, under the names the common runtimes read:
		// OpenSSL and Go (SSL_CERT_FILE, which replaces their bundle), Node
		// (NODE_EXTRA_CA_CERTS, added to its own), Python requests (REQUESTS_CA_BUNDLE).
		// httpx, under the Python SDKs, reads none of them by default: pass it the file
		// (docs/getting-started.md). The agent reaches nothing else over TLS.
		for _, name := range []string{"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"} {
			env = append(env, corev1.EnvVar{Name: name, Value: gw.GatewayCAFile})
		}
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
		env = append(env, corev1.EnvVar{Name: prefix + "_URL", Value: base + "/integrations/" + i.Name + "/"})
	}
	env = append(env, userEnv(va.Spec.Env)...)

	mounts := []corev1.VolumeMount{
		{Name: "tmp", MountPath: agentTmpDir},
		{Name: "session-key", MountPath: SessionKeyDir, ReadOnly: true},
		{Name: "agent-token", MountPath: gw.AgentTokenDir, ReadOnly: true},
	}
	if in.GatewayTLS {
		mounts = append(mounts, corev1.VolumeMount{Name: "gateway-ca", MountPath: gw.GatewayCADir, ReadOnly: true})
	}
	for _, c := range in.Credentials {
		if c.InAgent && c.Slot != "session-key" {
			mounts = append(mounts, corev1.VolumeMount{Name: c.VolumeName(), MountPath: c.MountDir(), ReadOnly: true})
		}
	}
	res := resources("100m", "128Mi", "512Mi", "64Mi", "320Mi")
	if va.Spec.Resources != nil {
		res = *va.Spec.Resources
	}
	return corev1.Container{
		Name:            AgentContainer,
		Image:           va.Spec.Image,
		ImagePullPolicy: pullPolicy(va.Spec.Image),
		Ports:           []corev1.ContainerPort{{Name: "agent", ContainerPort: AgentPort(va), Protocol: corev1.ProtocolTCP}},
		Env:             env,
		Resources:       res,
		VolumeMounts:    mounts,
		SecurityContext: restrictedContainerSecurity(nil),
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("agent")}},
			PeriodSeconds: 10,
		},
	}
}

// inboundContainer terminates the Service's TLS in front of the agent. It is a native
// sidecar (an init container that restarts Always): it starts before the agent and
// gets its SIGTERM only after the agent has exited, so that the agent's own calls
// drain through it. It mounts the Service's certificate alone.
func inboundContainer(va *v1alpha1.VoiceAgent, in DeploymentInputs) corev1.Container {
	return corev1.Container{
		Name:            InboundContainer,
		Image:           in.GatewayImage,
		ImagePullPolicy: pullPolicy(in.GatewayImage),
		RestartPolicy:   ptr.To(corev1.ContainerRestartPolicyAlways),
		Args: []string{"gateway", "--role", "inbound",
			"--listen", net.JoinHostPort("", itoa32(gw.TLSPort)),
			"--tls-dir", gw.TLSDir,
			"--upstream", net.JoinHostPort("127.0.0.1", itoa32(AgentPort(va))),
			"--admin", net.JoinHostPort("", itoa32(gw.AdminPort))},
		Ports: []corev1.ContainerPort{
			{Name: "https", ContainerPort: gw.TLSPort, Protocol: corev1.ProtocolTCP},
			{Name: "admin", ContainerPort: gw.AdminPort, Protocol: corev1.ProtocolTCP},
		},
		Resources:       resources("10m", "32Mi", "128Mi", "16Mi", "64Mi"),
		VolumeMounts:    []corev1.VolumeMount{{Name: "tls", MountPath: gw.TLSDir, ReadOnly: true}},
		SecurityContext: restrictedContainerSecurity(ptr.To[int64](GatewayUID)),
		LivenessProbe:   adminProbe("/healthz", 10),
		ReadinessProbe:  adminProbe("/readyz", 5),
	}
}

// adminProbe probes path on the admin port of the gateway binary (either role) every
// period seconds.
func adminProbe(path string, period int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("admin")}},
		PeriodSeconds: period,
	}
}

// agentVolumes are the agent pod's volumes: its temporary files, the session key, the
// agent token, the gateway's CA (ca.crt alone of the gateway's certificate Secret),
// the credentials the agent itself must hold (database) and the Service's certificate
// for the inbound role.
func agentVolumes(va *v1alpha1.VoiceAgent, in DeploymentInputs) []corev1.Volume {
	vols := []corev1.Volume{
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("256Mi"))}}},
		secretVolume("agent-token", AgentTokenSecretName(va), AgentTokenKey, "token"),
	}
	if in.GatewayTLS {
		vols = append(vols, secretVolume("gateway-ca", GatewayTLSSecretName(va), "ca.crt", "ca.crt"))
	}
	sessionKey := secretVolume("session-key", SessionKeySecretName(va), "key", "key")
	for _, c := range in.Credentials {
		switch {
		case c.Slot == "session-key":
			sessionKey = secretVolume("session-key", c.SecretName, c.SecretKey, "key")
		case c.InAgent:
			vols = append(vols, secretVolume(c.VolumeName(), c.SecretName, c.SecretKey, gw.CredentialFile))
		}
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
