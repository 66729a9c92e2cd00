package gateway

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/voiceagent-dev/voiceagent-operator/internal/rawio"
)

// credentialFile serves a credential from a mounted file and re-reads it when the file
// changes, so that a rotated Secret takes effect on the next request without a restart.
// Kubernetes updates Secret volumes by swapping a symlink, which changes what os.Stat
// reports; a stat per request is cheap next to a network call (and raw: package rawio).
type credentialFile struct {
	path string
	stat rawio.Path
	// statErr is a path that cannot be stat'ed at all (a NUL byte in it).
	statErr error

	mu      sync.RWMutex
	value   string
	modTime time.Time
	size    int64
}

func newCredentialFile(path string) *credentialFile {
	p, err := rawio.NewPath(path)
	return &credentialFile{path: path, stat: p, statErr: err}
}

// Value returns the current credential. The error never contains the value.
func (c *credentialFile) Value() (string, error) {
	if c == nil || c.path == "" {
		return "", nil
	}
	if c.statErr != nil {
		return "", fmt.Errorf("credential file %s: %w", c.path, c.statErr)
	}
	modTime, size, err := c.stat.Stat()
	if err != nil {
		return "", fmt.Errorf("credential file %s: %w", c.path, err)
	}
	c.mu.RLock()
	fresh := c.value != "" && modTime.Equal(c.modTime) && size == c.size
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
	c.value, c.modTime, c.size = v, modTime, size
	c.mu.Unlock()
	return v, nil
}
