package gateway

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// credentialRecheck is how long a credential is used before its file is looked at
// again. A stat per call was a system call on every call's path (and kept the Go
// runtime's monitor thread polling); the kubelet itself takes up to a minute to put a
// rotated Secret into the volume, so a second more changes nothing a user can see.
const credentialRecheck = time.Second

// credentialFile serves a credential from a mounted file and re-reads it when the file
// changes, so that a rotated Secret takes effect without a restart. Kubernetes updates
// Secret volumes by swapping a symlink, which changes what os.Stat reports; the file is
// looked at once per credentialRecheck, and at once after the upstream refused the key
// (invalidate).
type credentialFile struct {
	path  string
	clock clock.PassiveClock

	mu        sync.RWMutex
	value     string
	modTime   time.Time
	size      int64
	checkedAt time.Time // when the file was last looked at; zero: look now
}

func newCredentialFile(path string, clk clock.PassiveClock) *credentialFile {
	return &credentialFile{path: path, clock: clk}
}

// invalidate makes the next Value look at the file: the upstream refused the key, which
// a rotation in progress explains.
func (c *credentialFile) invalidate() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.checkedAt = time.Time{}
	c.mu.Unlock()
}

// Value returns the current credential. The error never contains the value.
func (c *credentialFile) Value() (string, error) {
	if c == nil || c.path == "" {
		return "", nil
	}
	now := c.clock.Now()
	c.mu.RLock()
	v, checked := c.value, c.checkedAt
	c.mu.RUnlock()
	if v != "" && !checked.IsZero() && now.Sub(checked) < credentialRecheck && !now.Before(checked) {
		return v, nil
	}
	st, err := os.Stat(c.path)
	if err != nil {
		return "", fmt.Errorf("credential file %s: %w", c.path, err)
	}
	c.mu.Lock()
	fresh := c.value != "" && st.ModTime().Equal(c.modTime) && st.Size() == c.size
	if fresh {
		c.checkedAt = now
	}
	v = c.value
	c.mu.Unlock()
	if fresh {
		return v, nil
	}
	data, err := os.ReadFile(c.path)
	if err != nil {
		return "", fmt.Errorf("credential file %s: %w", c.path, err)
	}
	v = string(bytes.TrimSpace(data))
	if v == "" {
		return "", fmt.Errorf("credential file %s is empty", c.path)
	}
	c.mu.Lock()
	c.value, c.modTime, c.size, c.checkedAt = v, st.ModTime(), st.Size(), now
	c.mu.Unlock()
	return v, nil
}

// refusedKey: the upstream refused the credential, which a rotation in progress
// explains; the next call looks at the file again.
func refusedKey(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}
