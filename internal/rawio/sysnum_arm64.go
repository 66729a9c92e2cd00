//go:build linux && !race

package rawio

import "syscall"

const sysFstatat = syscall.SYS_FSTATAT
