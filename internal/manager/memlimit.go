package manager

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// MemoryLimitEnv is the environment variable the manifests (config/manager, the Helm
// chart) set to the manager container's limits.memory in bytes, through the downward
// API (resourceFieldRef). Without a limit on the container the API server gives the
// node's allocatable memory instead.
const MemoryLimitEnv = "MEMORY_LIMIT"

// DefaultGoMemoryLimit is the manager command's --go-memory-limit: the Go heap's soft
// limit at 80% of the container's memory limit, the rest for what the Go runtime does
// not count (the binary's text and data, about 33 MiB of RSS) and a margin: at the
// chart's 256Mi, 205 MiB (at 85%, make bench-operator's peak RSS was 253 MiB). Without a soft
// limit the Go heap grows to twice its live size between collections (GOGC=100),
// which at 1,000 VoiceAgents took the manager past the chart's 256Mi limit.
const DefaultGoMemoryLimit = "80%"

// GoMemoryLimit resolves --go-memory-limit into the bytes to pass to
// runtime/debug.SetMemoryLimit: a quantity ("200Mi", "209715200") as it is, a percentage
// ("80%") of containerLimit (the value of MemoryLimitEnv), "off" or "0" for none (-1
// then: leave the runtime as it is). A percentage with no container limit known is
// none as well; so is the default when goMemLimitEnv (GOMEMLIMIT, which the Go runtime
// reads at start) is set, which then stays in force. The string says what was chosen,
// for the log.
func GoMemoryLimit(flag, containerLimit, goMemLimitEnv string) (int64, string, error) {
	flag = strings.TrimSpace(flag)
	switch {
	case flag == "off" || flag == "0":
		return -1, "no soft memory limit (--go-memory-limit=" + flag + ")", nil
	case strings.HasSuffix(flag, "%"):
		if flag == DefaultGoMemoryLimit && goMemLimitEnv != "" {
			return -1, "GOMEMLIMIT=" + goMemLimitEnv + " (the environment's, in force)", nil
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(flag, "%"), 64)
		if err != nil || pct <= 0 || pct > 100 {
			return 0, "", fmt.Errorf("--go-memory-limit=%s: a percentage must be above 0 and at most 100", flag)
		}
		if containerLimit == "" {
			return -1, "no soft memory limit (no " + MemoryLimitEnv + ": the container's limit is not known)", nil
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(containerLimit), 10, 64)
		if err != nil || limit <= 0 {
			return 0, "", fmt.Errorf("%s=%q: want the container's memory limit in bytes (downward API resourceFieldRef limits.memory)", MemoryLimitEnv, containerLimit)
		}
		soft := int64(math.Floor(float64(limit) * pct / 100))
		return soft, fmt.Sprintf("%s of the container's memory limit (%s=%d)", flag, MemoryLimitEnv, limit), nil
	default:
		q, err := resource.ParseQuantity(flag)
		if err != nil {
			return 0, "", fmt.Errorf("--go-memory-limit=%s: want a quantity (200Mi), a percentage of the container's limit (80%%) or off: %w", flag, err)
		}
		v, ok := q.AsInt64()
		if !ok || v <= 0 {
			return 0, "", fmt.Errorf("--go-memory-limit=%s: must be a positive number of bytes", flag)
		}
		return v, "--go-memory-limit=" + flag, nil
	}
}
