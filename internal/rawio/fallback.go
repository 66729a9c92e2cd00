//go:build !(linux && (amd64 || arm64)) || race

package rawio

import (
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Wrap returns c unchanged here: see the package comment.
func Wrap(c net.Conn) net.Conn { return c }

// FileWriter writes with os.File's Write here.
type FileWriter struct{ f *os.File }

// NewFileWriter writes to f, which stays the caller's to sync and close.
func NewFileWriter(f *os.File) (*FileWriter, error) { return &FileWriter{f: f}, nil }

// Write is os.File's Write.
func (w *FileWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// Path is a file name prepared for Stat.
type Path struct{ name string }

// NewPath prepares name; it fails only for a name with a NUL byte.
func NewPath(name string) (Path, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return Path{}, &os.PathError{Op: "stat", Path: name, Err: syscall.EINVAL}
	}
	return Path{name: name}, nil
}

// Stat reports the modification time and size of the file the path names.
func (p Path) Stat() (time.Time, int64, error) {
	st, err := os.Stat(p.name)
	if err != nil {
		return time.Time{}, 0, err
	}
	return st.ModTime(), st.Size(), nil
}
