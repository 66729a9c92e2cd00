package render

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/voiceagent-dev/voiceagent-operator/api/v1alpha1"
	gw "github.com/voiceagent-dev/voiceagent-operator/internal/gatewayconfig"
)

// Credential slots of the limit store: mounted into the gateway container only.
const (
	limitStoreUsernameSlot = "limit-store-username"
	limitStorePasswordSlot = "limit-store-password"
	limitStoreCASlot       = "limit-store-ca"
)

// LimitStoreKeyPrefix scopes a VoiceAgent's keys in a shared Redis. The braces are a
// Redis Cluster hash tag: every key of the VoiceAgent lands in one slot, so that one
// script can check and count them all.
func LimitStoreKeyPrefix(va *v1alpha1.VoiceAgent) string {
	return "voiceagent:{" + va.Namespace + "/" + va.Name + "}:"
}

// limitStoreDestination is the gateway pods' way to the limit store, nil without one.
// Admission keeps the address inside the cluster; a VoiceAgent stored before those
// rules is refused here, as checkAgentEgress does for the agent's own rules: a public
// host name would open the gateways' egress to its port on every public address.
func limitStoreDestination(va *v1alpha1.VoiceAgent, clusterDomain string) (*Destination, error) {
	ls := va.Spec.LimitStore
	if ls == nil {
		return nil, nil
	}
	const field = "spec.limitStore.redis.address"
	addr := ls.Redis.Address
	if strings.Contains(addr, "://") || strings.Contains(addr, "@") {
		return nil, fmt.Errorf("%s: %q: give host:port only, without a scheme, user name or password (TLS is spec.limitStore.redis.tls, the password spec.limitStore.redis.credentials)", field, addr)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("%s: %q is not host:port, e.g. redis.limits.svc:6379", field, addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("%s: port %q must be 1 to 65535", field, portStr)
	}
	if _, ok := inClusterNamespace(host, clusterDomain); !ok && !privateIP(host) {
		return nil, fmt.Errorf("%s: %q is neither an in-cluster Service name (<service>.<namespace>.svc) nor a private IP address (and never a cloud metadata address); the gateway pods reach the limit store inside the cluster only", field, host)
	}
	return &Destination{Host: host, Port: int32(port)}, nil
}

// limitStoreCredential is one credential of the limit store and its spec field.
type limitStoreCredential struct {
	field, slot string
	src         *v1alpha1.CredentialSource
}

// limitStoreCredentials are the limit store's credentials that are set, in a stable
// order.
func limitStoreCredentials(va *v1alpha1.VoiceAgent) []limitStoreCredential {
	ls := va.Spec.LimitStore
	if ls == nil {
		return nil
	}
	all := []limitStoreCredential{
		{"spec.limitStore.redis.username", limitStoreUsernameSlot, ls.Redis.Username},
		{"spec.limitStore.redis.credentials", limitStorePasswordSlot, ls.Redis.Credentials},
	}
	if ls.Redis.TLS != nil {
		all = append(all, limitStoreCredential{"spec.limitStore.redis.tls.ca", limitStoreCASlot, ls.Redis.TLS.CA})
	}
	var out []limitStoreCredential
	for _, c := range all {
		if c.src != nil {
			out = append(out, c)
		}
	}
	return out
}

// limitStoreConfig is the gateway's limit store: the whole VoiceAgent's limits, not a
// replica's share (those stay in Limits, Voice and Budget, the FailOpen fallback).
func limitStoreConfig(va *v1alpha1.VoiceAgent, files map[string]string) *gw.LimitStore {
	ls := va.Spec.LimitStore
	if ls == nil {
		return nil
	}
	out := &gw.LimitStore{
		Redis: gw.RedisStore{
			Address:      ls.Redis.Address,
			UsernameFile: files[limitStoreUsernameSlot],
			PasswordFile: files[limitStorePasswordSlot],
		},
		FailurePolicy: string(ls.FailurePolicy),
		KeyPrefix:     LimitStoreKeyPrefix(va),
	}
	if out.FailurePolicy == "" {
		out.FailurePolicy = gw.LimitStoreFailOpen
	}
	if t := ls.Redis.TLS; t != nil {
		out.Redis.TLS = gw.RedisTLS{Disabled: t.Disabled, ServerName: t.ServerName, CAFile: files[limitStoreCASlot]}
	}
	g := &out.Global
	if rl := va.Spec.RateLimits; rl != nil {
		if rl.RequestsPerSecond != nil {
			g.RequestsPerSecond = float64(*rl.RequestsPerSecond)
		}
		if rl.Burst != nil {
			g.Burst = int(*rl.Burst)
		}
		if rl.TokensPerMinute != nil {
			g.TokensPerMinute = float64(*rl.TokensPerMinute)
		}
		if rl.MaxConcurrentCalls != nil {
			g.MaxConcurrentCalls = int(*rl.MaxConcurrentCalls)
		}
	}
	if v := va.Spec.Voice; v != nil {
		if v.MaxConcurrentSessions != nil {
			g.MaxConcurrentSessions = int(*v.MaxConcurrentSessions)
		}
		if v.SessionsPerMinute != nil {
			g.SessionsPerMinute = float64(*v.SessionsPerMinute)
		}
	}
	if cl := va.Spec.CostLimits; cl != nil {
		g.Daily, g.Monthly = cl.DailyBudget, cl.MonthlyBudget
	}
	return out
}
