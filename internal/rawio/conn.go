//go:build linux && (amd64 || arm64) && !race

package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn is a *net.TCPConn whose Read and Write are raw system calls. Every other method
// is the TCPConn's.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The callbacks and their arguments live here so that a call allocates nothing;
	// reading and writing have their own, as one goroutine may read while another writes.
	rbuf, wbuf     []byte
	rn, wn         int
	rerrno, werrno syscall.Errno
	readFn         func(fd uintptr) bool
	writeFn        func(fd uintptr) bool
}

// Wrap returns c with raw Read and Write when it is a TCP connection, else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	rs := &Conn{TCPConn: tc, rc: rc}
	rs.readFn, rs.writeFn = rs.read, rs.write
	return rs
}

func (c *Conn) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // net waits for readiness (or the deadline) and calls again
		}
		c.rn, c.rerrno = int(r), e
		return true
	}
}

// write sends with MSG_NOSIGNAL: a peer that is gone is an EPIPE error, never a signal.
func (c *Conn) write(fd uintptr) bool {
	for len(c.wbuf) > 0 {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.wbuf[0])), uintptr(len(c.wbuf)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(r)
			c.wbuf = c.wbuf[r:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the send buffer is full: net waits until it drains
		default:
			c.werrno = e
			return true
		}
	}
	return true
}

// Read is net.Conn's Read: io.EOF at the peer's end of stream, *net.OpError otherwise.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case c.rerrno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", c.rerrno))
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// Write is net.Conn's Write: all of p, or an error and how much was written.
func (c *Conn) Write(p []byte) (int, error) {
	c.wbuf, c.wn, c.werrno = p, 0, 0
	err := c.rc.Write(c.writeFn)
	c.wbuf = nil
	switch {
	case err != nil:
		return c.wn, c.opError("write", err)
	case c.werrno != 0:
		return c.wn, c.opError("write", os.NewSyscallError("write", c.werrno))
	}
	return c.wn, nil
}

// opError names the operation as net does and keeps the cause (net.ErrClosed,
// os.ErrDeadlineExceeded, a syscall error) reachable with errors.Is.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
