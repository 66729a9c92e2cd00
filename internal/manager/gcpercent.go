package manager

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultGoGCPercent is the manager command's --go-gc-percent. The Go default (100) lets
// the heap grow to twice its live size between collections; at 1,000 VoiceAgents that put
// the manager's peak RSS at 169-188 MiB, above the 150 MiB it should stay under. At 50,
// make bench-operator measured 141 MiB first run and 138 MiB after a restart, for about 4%
// more manager CPU in the create phase (docs/performance.md, run G).
const DefaultGoGCPercent = "50"

// GoGCPercent resolves --go-gc-percent into the value to pass to runtime/debug.SetGCPercent:
// a whole percentage above 0 and at most 1000, or "off" (-1: collect only at the soft memory
// limit, which must then be in force). The default gives way to GOGC when that is set (the Go
// runtime has read it at start), and ok is false then: leave the runtime as it is. The string
// says what was chosen, for the log.
func GoGCPercent(flag, gogcEnv string, memoryLimitInForce bool) (percent int, ok bool, why string, err error) {
	flag = strings.TrimSpace(flag)
	if flag == DefaultGoGCPercent && gogcEnv != "" {
		return 0, false, "GOGC=" + gogcEnv + " (the environment's, in force)", nil
	}
	if flag == "off" {
		if !memoryLimitInForce {
			return 0, false, "", fmt.Errorf("--go-gc-percent=off: the heap would never be collected without a soft memory limit; set --go-memory-limit (or MEMORY_LIMIT), or give a percentage such as %s", DefaultGoGCPercent)
		}
		return -1, true, "no proportional collection (--go-gc-percent=off): the soft memory limit alone", nil
	}
	pct, perr := strconv.Atoi(flag)
	if perr != nil || pct <= 0 || pct > 1000 {
		return 0, false, "", fmt.Errorf("--go-gc-percent=%s: want a whole percentage above 0 and at most 1000 (the heap grows by that much of its live size between collections), or off", flag)
	}
	return pct, true, "--go-gc-percent=" + flag, nil
}
