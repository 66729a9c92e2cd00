// Package gateway is the sidecar that stands between a voice agent and everything it
// calls. It listens on loopback only, injects the provider and integration credentials
// that only it can read, and enforces the VoiceAgent's limits: request rate, concurrent
// calls, tokens per minute, cost budgets, circuit breakers with failover, retries with
// backoff. It sanitises upstream errors and writes one audit record per call.
package gateway
