// Package rawio makes the system calls of the gateway's per-call path (socket reads and
// writes, the audit queue's append, the credential file's stat) as raw system calls.
//
// Go brackets an ordinary system call with the scheduler's bookkeeping, and the first
// one after the process was idle also wakes the runtime's monitor thread (sysmon),
// which then polls every 20 µs until the process is idle again. A sidecar at 1,000
// calls per second is idle between almost every two calls, so it paid that wake-up and
// its context switches on every call. Measured on the 2-core test machine (two gateway
// builds side by side in one bench run, perf stat on each, twice): 21 to 30% fewer
// context switches and 9 to 14% less CPU per call (docs/performance.md).
//
// Only calls that cannot wait long are made raw: the sockets are non-blocking (read
// and send return EAGAIN at once, and waiting for readiness, deadlines and Close stay
// net's), a stat of a mounted file, and a write of one record into the page cache.
// A raw call keeps its scheduler slot while it runs; a disk so slow that a page-cache
// write blocks holds up the audit queue's lock, and so every call, either way.
//
// Race-detector builds, and platforms other than linux/amd64 and linux/arm64, use the
// standard library's calls (fallback.go): the race detector cannot see the kernel write
// into a buffer that a raw call filled.
package rawio
