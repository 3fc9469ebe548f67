package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// daemonReadyEnv names the descriptor on which a daemon's child reports
// that it is ready. Go cannot fork without exec, so -d starts the same
// binary again in a new session, as gearmand's fork does.
const daemonReadyEnv = "GEARSHARD_DAEMON_READY_FD"

// daemonize runs the server as a child in its own session and returns when
// the child is ready (exit 0, as gearmand's parent does on the child's
// signal) or with the child's own exit status if it ended first. The child
// reports its errors itself, on the stderr it inherits.
func daemonize(args invocation) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("--daemon: %w", err)
	}
	defer r.Close()
	// The binary by its own path, not /proc/self/exe: the kernel names the
	// process after the file it runs, and ps -C, pgrep -x and killall find
	// "gearshard", not "exe".
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	child := &exec.Cmd{
		Path:        self,
		Args:        append([]string{os.Args[0]}, args...),
		Env:         append(os.Environ(), daemonReadyEnv+"=3"),
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = child.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("--daemon: %w", err)
	}
	if n, _ := r.Read(make([]byte, 1)); n == 1 {
		return nil
	}
	// The pipe closed without a word: the child ended before it was ready.
	var exit *exec.ExitError
	if err := child.Wait(); errors.As(err, &exit) && exit.ExitCode() > 0 {
		return exitStatus(exit.ExitCode())
	}
	return exitStatus(1)
}

// daemonChild returns, in a daemon's child, the call that tells the parent
// the server is ready and then detaches from the terminal (stdin, stdout
// and stderr to /dev/null, as gearmand); elsewhere nil.
func daemonChild() func() error {
	fd := os.Getenv(daemonReadyEnv)
	if fd == "" {
		return nil
	}
	os.Unsetenv(daemonReadyEnv)
	n, err := strconv.Atoi(fd)
	var st unix.Stat_t
	if err != nil || unix.Fstat(n, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil // not our parent's pipe: a variable set by hand
	}
	pipe := os.NewFile(uintptr(n), "daemon-ready")
	return func() error {
		_, err := pipe.Write([]byte{1})
		pipe.Close()
		if err != nil {
			return fmt.Errorf("--daemon: telling the parent: %w", err)
		}
		return detachStdio()
	}
}

func detachStdio() error {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(int(null.Fd()), fd, 0); err != nil {
			return fmt.Errorf("--daemon: detaching descriptor %d: %w", fd, err)
		}
	}
	return nil
}

// switchUser drops root for name's user and group, with no supplementary
// groups, as gearmand's -u does.
func switchUser(name string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("--user %s: must be root to switch users", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("--user %s: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("--user %s: %w", name, err)
	}
	// Group first: once the user is not root, it may no longer change groups.
	for _, step := range []func() error{
		func() error { return syscall.Setgroups(nil) },
		func() error { return syscall.Setgid(gid) },
		func() error { return syscall.Setuid(uid) },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("--user %s: %w", name, err)
		}
	}
	return nil
}
