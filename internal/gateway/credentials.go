package gateway

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"
)

// credentialFile serves a credential from a mounted file and re-reads it when the file
// changes, so that a rotated Secret takes effect on the next request without a restart.
// Kubernetes updates Secret volumes by swapping a symlink, which changes what os.Stat
// reports; a stat per request is cheap next to a network call.
type credentialFile struct {
	path string

	mu      sync.RWMutex
	value   string
	modTime time.Time
	size    int64
}

func newCredentialFile(path string) *credentialFile { return &credentialFile{path: path} }

// Value returns the current credential. The error never contains the value.
func (c *credentialFile) Value() (string, error) {
	if c == nil || c.path == "" {
		return "", nil
	}
	st, err := os.Stat(c.path)
	if err != nil {
		return "", fmt.Errorf("credential file %s: %w", c.path, err)
	}
	c.mu.RLock()
	fresh := c.value != "" && st.ModTime().Equal(c.modTime) && st.Size() == c.size
	v := c.value
	c.mu.RUnlock()
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
	c.value, c.modTime, c.size = v, st.ModTime(), st.Size()
	c.mu.Unlock()
	return v, nil
}
