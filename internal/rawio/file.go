//go:build linux && (amd64 || arm64) && !race

package rawio

import (
	"os"
	"syscall"
	"time"
	"unsafe"
)

// FileWriter appends to a regular file with raw write(2) calls. It is not safe for
// concurrent use (the audit queue writes under its lock).
type FileWriter struct {
	f     *os.File
	rc    syscall.RawConn
	buf   []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// NewFileWriter writes to f, which stays the caller's to sync and close.
func NewFileWriter(f *os.File) (*FileWriter, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &FileWriter{f: f, rc: rc}
	w.fn = w.write
	return w, nil
}

func (w *FileWriter) write(fd uintptr) bool {
	for len(w.buf) > 0 {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.buf[0])), uintptr(len(w.buf)))
		switch {
		case e == syscall.EINTR:
		case e != 0:
			w.errno = e
			return true
		case r == 0:
			w.errno = syscall.EIO // a regular file that takes nothing: do not spin
			return true
		default:
			w.n += int(r)
			w.buf = w.buf[r:]
		}
	}
	return true
}

// Write is os.File's Write: all of p, or an error (*os.PathError) and how much was written.
func (w *FileWriter) Write(p []byte) (int, error) {
	w.buf, w.n, w.errno = p, 0, 0
	err := w.rc.Write(w.fn)
	w.buf = nil
	if err == nil && w.errno != 0 {
		err = w.errno
	}
	if err != nil {
		return w.n, &os.PathError{Op: "write", Path: w.f.Name(), Err: err}
	}
	return w.n, nil
}

// Path is a file name prepared for Stat.
type Path struct {
	name string
	p    *byte
}

// NewPath prepares name; it fails only for a name with a NUL byte.
func NewPath(name string) (Path, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return Path{}, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	return Path{name: name, p: p}, nil
}

// Stat reports the modification time and size of the file the path names (following
// symbolic links, as os.Stat does).
func (p Path) Stat() (time.Time, int64, error) {
	var st syscall.Stat_t
	_, _, e := syscall.RawSyscall6(sysFstatat, uintptr(atFDCWD), uintptr(unsafe.Pointer(p.p)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
	if e != 0 {
		return time.Time{}, 0, &os.PathError{Op: "stat", Path: p.name, Err: e}
	}
	return time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec)), st.Size, nil
}

// atFDCWD is AT_FDCWD (-100): a relative name is taken from the working directory.
const atFDCWD = -100 & (1<<64 - 1)
