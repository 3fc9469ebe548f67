package main

// The flags Debian's own gearman-job-server service starts gearmand with
// (--daemon, --user, --pid-file, --log-file), and gearmand's --config-file,
// --syslog, --coredump and --check-args.

import (
	"bytes"
	"context"
	"errors"
	"log/syslog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// running reports whether pid is a live process (a zombie has ended).
func running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// stopDaemon ends a detached server with SIGTERM and waits for it to go.
func stopDaemon(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	gstest.Eventually(t, waitTimeout, func() bool { return !running(pid) }, "daemon %d still running after SIGTERM", pid)
}

// runDaemon runs a command that starts a detached server with pidFile,
// and returns its output, the PID the file names (0 if none) and its
// error; the server is killed when the test ends, if still running. A
// server that kept the command's output open would hold it up; it fails
// the test instead (exec.ErrWaitDelay).
func runDaemon(t *testing.T, pidFile, name string, args ...string) (out []byte, pid int, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err = cmd.CombinedOutput()
	b, _ := os.ReadFile(pidFile)
	pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() {
		if pid > 0 && running(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err == nil && cmd.Process.Pid == pid {
		t.Errorf("the pid file names the command (%d), not the server it left running", pid)
	}
	return out, pid, err
}

// sharedDir is a directory that a server switched to another user (-u)
// can write its pid and log files in.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gearshard-user")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDaemonReturnsWhenReady starts the server the way Debian's service
// does (`--pid-file=... --listen=... --daemon --log-file=...`, Type=forking):
// the command must return 0 only once the pid file names a server that
// answers, detached in its own session with stdio on /dev/null.
func TestDaemonReturnsWhenReady(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile, logFile := filepath.Join(dir, "gearmand.pid"), filepath.Join(dir, "gearmand.log")
	out, pid, err := runDaemon(t, pidFile, gearshardBinary(t), "--pid-file="+pidFile, "--listen=127.0.0.1", "--port=0",
		"--daemon", "--log-file="+logFile, "--verbose=INFO")
	if err != nil || len(out) > 0 {
		t.Fatalf("gearshard --daemon: %v, output %q; want exit 0 and no output", err, out)
	}
	if pid <= 0 || !running(pid) {
		t.Fatalf("pid file names %d (running %v) when --daemon returned; want the live server", pid, running(pid))
	}
	addr := readyAddr(logFile)
	if addr == "" {
		t.Fatal("--daemon returned before the server was ready")
	}
	c := gstest.Dial(t, addr)
	c.Send(wire.EchoReq, "detached")
	c.Expect(wire.EchoRes, "detached")

	bin := gearshardBinary(t)
	if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err != nil || string(comm) != filepath.Base(bin)+"\n" {
		t.Errorf("daemon's name %q, %v; want %s (as ps -C and pgrep -x find it)", comm, err, filepath.Base(bin))
	}
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("session of %d: %d, %v; want its own", pid, sid, err)
	}
	for fd := 0; fd <= 2; fd++ {
		if target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(fd)); err != nil || target != os.DevNull {
			t.Errorf("descriptor %d of the daemon: %q, %v; want %s", fd, target, err, os.DevNull)
		}
	}
	stopDaemon(t, pid)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
}

// TestDebianInitScript starts and stops the server with the commands of
// Debian's /etc/init.d/gearman-job-server, through dpkg's start-stop-daemon:
// start runs it with --pid-file, --user (as root) and the default PARAMS,
// stop finds it by pid file and executable and sends SIGTERM.
func TestDebianInitScript(t *testing.T) {
	t.Parallel()
	ssd, err := exec.LookPath("start-stop-daemon")
	if err != nil {
		t.Fatalf("start-stop-daemon (Debian's dpkg) not found: %v", err)
	}
	bin := gearshardBinary(t)
	dir := sharedDir(t)
	pidFile, logFile := filepath.Join(dir, "gearmand.pid"), filepath.Join(dir, "gearmand.log")
	args := []string{"--start", "--exec", bin, "--", "--pid-file=" + pidFile}
	if os.Geteuid() == 0 {
		args = append(args, "--user=nobody")
	}
	args = append(args, "--listen=127.0.0.1", "--port=0", "--daemon", "--log-file="+logFile, "--verbose=INFO")
	out, pid, err := runDaemon(t, pidFile, ssd, args...)
	if err != nil || pid <= 0 {
		t.Fatalf("start-stop-daemon --start: %v, output %q, pid %d", err, out, pid)
	}
	c := gstest.Dial(t, readyAddr(logFile))
	c.Send(wire.EchoReq, "init.d")
	c.Expect(wire.EchoRes, "init.d")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stop := exec.CommandContext(ctx, ssd, "--stop", "--oknodo", "--exec", bin, "--pidfile", pidFile)
	if out, err := stop.CombinedOutput(); err != nil {
		t.Fatalf("start-stop-daemon --stop: %v, output %q", err, out)
	}
	gstest.Eventually(t, waitTimeout, func() bool { return !running(pid) }, "server %d still running after start-stop-daemon --stop", pid)
}

// TestDaemonReportsChildError: when the detached server cannot start, the
// command says why and exits with the server's status, as gearmand's
// parent does with its child's.
func TestDaemonReportsChildError(t *testing.T) {
	t.Parallel()
	port := strconv.Itoa(busyPort(t))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gearshardBinary(t), "-d", "-L", "127.0.0.1", "-p", port, "-l", "none")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	want := "gearshard: cannot listen on 127.0.0.1:" + port + ": bind: address already in use\n"
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || string(out) != want {
		t.Fatalf("gearshard -d on a busy port: %v, output %q; want exit status 1 and %q", err, out, want)
	}
}

// TestSwitchUser: as root, -u drops to the user's uid and gid with no
// supplementary groups before anything is opened (the pid file belongs to
// the user), and the server works; not as root, it is refused as gearmand
// refuses it.
func TestSwitchUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		var stdout, stderr bytes.Buffer
		code := run(strings.Fields("-u nobody -p 0 -L 127.0.0.1 -l none"), &stdout, &stderr)
		if want := "gearshard: --user nobody: must be root to switch users\n"; code != 1 || stderr.String() != want {
			t.Fatalf("-u as uid %d: %d, %q; want 1, %q", os.Geteuid(), code, stderr.String(), want)
		}
		return
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("the test needs the user nobody: %v", err)
	}
	pidFile := filepath.Join(sharedDir(t), "gearshard.pid")
	// Started as root with a supplementary group, which -u must drop too.
	p := startProcessAs(t, &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{4}}, "-u", "nobody", "-P", pidFile)
	pid := p.cmd.Process.Pid
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Uid":    strings.Repeat(nobody.Uid+"\t", 3) + nobody.Uid,
		"Gid":    strings.Repeat(nobody.Gid+"\t", 3) + nobody.Gid,
		"Groups": "",
	}
	for _, line := range strings.Split(string(status), "\n") {
		key, value, _ := strings.Cut(line, ":")
		if w, ok := want[key]; ok && strings.TrimSpace(value) != w {
			t.Errorf("%s: %q; want %q", key, strings.TrimSpace(value), w)
		}
	}
	if fi, err := os.Stat(pidFile); err != nil || strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)) != nobody.Uid {
		t.Errorf("pid file %v: want it written by nobody (uid %s)", err, nobody.Uid)
	}
	c := gstest.Dial(t, p.addr)
	c.Send(wire.EchoReq, "as nobody")
	c.Expect(wire.EchoRes, "as nobody")

	var stdout, stderr bytes.Buffer
	code := run(strings.Fields("-u gearshard-no-such-user -p 0 -L 127.0.0.1 -l none"), &stdout, &stderr)
	if want := "gearshard: --user gearshard-no-such-user: user: unknown user gearshard-no-such-user\n"; code != 1 || stderr.String() != want {
		t.Errorf("unknown user: %d, %q; want 1, %q", code, stderr.String(), want)
	}
}

// TestCoredump: with --coredump a crash ends in SIGABRT, which dumps core
// where the system allows it, rather than in a stack trace and exit
// status 2. SIGQUIT stands in for the crash: Go handles both alike.
func TestCoredump(t *testing.T) {
	t.Setenv("GOTRACEBACK", "") // the test's own setting would decide otherwise
	// No core file from the test itself; the children inherit the limit.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &lim); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: lim.Max}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_CORE, &lim) })

	for _, c := range []struct {
		args  []string
		abort bool
	}{{nil, false}, {[]string{"--coredump"}, true}} {
		p := startProcess(t, c.args...)
		if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
			t.Fatal(err)
		}
		err := p.wait(t, waitTimeout)
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("%q after SIGQUIT: %v; want a crash", c.args, err)
		}
		ws := exit.Sys().(syscall.WaitStatus)
		if aborted := ws.Signaled() && ws.Signal() == syscall.SIGABRT; aborted != c.abort || (!c.abort && ws.ExitStatus() != 2) {
			t.Errorf("%q after SIGQUIT: %v; want SIGABRT %v (else exit status 2)", c.args, err, c.abort)
		}
	}
}

// TestSyslog: --syslog sends every log line to syslog too, at the matching
// priority of facility user, tagged gearshard; with no syslog to reach, the
// server logs that and runs on.
func TestSyslog(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "log")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dial := func() (*syslog.Writer, error) {
		return syslog.Dial("unixgram", sock, syslog.LOG_USER|syslog.LOG_INFO, "gearshard")
	}
	log, _, closeLog, err := openLog("none", zerolog.InfoLevel, dial)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("hello syslog")
	log.Error().Msg("it failed")
	log.Debug().Msg("below the level")
	closeLog()
	l.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4096)
	for _, want := range []struct{ pri, msg string }{{"<14>", "hello syslog"}, {"<11>", "it failed"}} {
		n, err := l.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got := string(buf[:n])
		if !strings.HasPrefix(got, want.pri) || !strings.Contains(got, " gearshard[") || !strings.Contains(got, `"message":"`+want.msg+`"`) {
			t.Errorf("syslog got %q; want priority %s, tag gearshard, message %q", got, want.pri, want.msg)
		}
	}
	l.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := l.Read(buf); err == nil {
		t.Errorf("a debug line reached syslog at level INFO: %q", buf[:n])
	}

	logFile := filepath.Join(t.TempDir(), "gearshard.log")
	noSyslog := func() (*syslog.Writer, error) { return nil, errors.New("no syslog here") }
	log, _, closeLog, err = openLog(logFile, zerolog.InfoLevel, noSyslog)
	if err != nil {
		t.Fatalf("a missing syslog stopped the server: %v", err)
	}
	log.Info().Msg("still logging")
	closeLog()
	text, _ := os.ReadFile(logFile)
	if !strings.Contains(string(text), "--syslog: no syslog to log to") || !strings.Contains(string(text), "still logging") {
		t.Errorf("log file %q: want the syslog warning and the later line", text)
	}
}

// TestConfigFile: gearmand's --config-file holds options separated by white
// space, read before the command line's, which win; a bad option in it is
// reported with the file's name, and a named file that is missing is an
// error (the default one, /etc/gearmand.conf, is read only if present).
func TestConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "gearmand.conf")
	if err := os.WriteFile(conf, []byte("# gearmand options\n--job-handle-prefix H:file\n-w 1 # one NOOP --bogus\r\n\t--verbose=INFO  --exceptions -j -1\n#-w 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args         []string
		prefix, verb string
		wakeup       int
	}{
		{[]string{"--config-file", conf}, "H:file", "INFO", 1},
		{[]string{"serve", "--config-file=" + conf, "-w", "2", "--verbose", "DEBUG"}, "H:file", "DEBUG", 2},
	} {
		args, err := withConfigFile(c.args)
		if err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		got := parseServe(t, args...)
		if got.JobHandlePrefix != c.prefix || got.Verbose != c.verb || got.WorkerWakeup != c.wakeup || !got.Exceptions || got.JobRetries != -1 {
			t.Errorf("%q: prefix %q, verbose %q, -w %d, exceptions %v, -j %d; want %q, %q, %d, true, -1",
				c.args, got.JobHandlePrefix, got.Verbose, got.WorkerWakeup, got.Exceptions, got.JobRetries, c.prefix, c.verb, c.wakeup)
		}
	}
	other := []string{"admin", "--config-file", conf}
	if args, err := withConfigFile(other); err != nil || len(args) != len(other) {
		t.Errorf("admin: %q, %v; want its own arguments only", args, err)
	}

	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("-p 0 --bogus 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	twice := filepath.Join(dir, "twice.conf")
	if err := os.WriteFile(twice, []byte("-w 1\n--worker-wakeup 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.conf")
	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		// --check-args: were the file taken, the server would not start.
		{[]string{"--check-args", "--config-file", bad}, 2, "gearshard: --config-file " + bad + ": unknown flag --bogus\n"},
		{[]string{"--check-args", "--config-file", twice}, 2, "gearshard: --config-file " + twice + ": option '--worker-wakeup' cannot be specified more than once\n"},
		{[]string{"--check-args", "--config-file", missing}, 1, "gearshard: --config-file " + missing + ": open " + missing + ": no such file or directory\n"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(c.args, &stdout, &stderr); code != c.code || stderr.String() != c.stderr {
			t.Errorf("run(%q) = %d, %q; want %d, %q", c.args, code, stderr.String(), c.code, c.stderr)
		}
	}

	// End to end: the server takes the file's options.
	p := startProcess(t, "--config-file", conf)
	g := gstest.Dial(t, p.addr)
	g.Send(wire.SubmitJobBG, "fn", "", "data")
	if h := g.Expect(wire.JobCreated).Fields[0]; !strings.HasPrefix(h, "H:file:") {
		t.Errorf("JOB_CREATED %q: want the config file's prefix H:file", h)
	}
}
