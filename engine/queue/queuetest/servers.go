// Package queuetest starts real PostgreSQL and Redis servers (from the
// Debian packages postgresql and redis-server) on loopback, on free ports,
// in temporary directories, for the tests of the persistent queue.
package queuetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// Real database servers for the tests: private instances on loopback, on
// free ports, in temporary directories, from the Debian packages
// postgresql and redis-server (`make deps` installs them).

// serverProc is a database server process the test started.
type serverProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string // its log file
}

// launch starts cmd (as cred when not nil), logging to logPath. The server
// gets SIGKILL should the test binary die without cleaning up.
func launch(t testing.TB, cmd *exec.Cmd, cred *syscall.Credential, logPath string) *serverProc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("log file: %v", err)
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// Pdeathsig follows the thread that forks: keep this goroutine on one
	// (the runtime does not end threads that are not locked at exit).
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p := &serverProc{cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(p.exited) }()
	return p
}

// stop sends sig and waits for the process to exit (SIGKILL after 20 s).
func (p *serverProc) stop(sig syscall.Signal) {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return
	case <-time.After(20 * time.Second):
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

func (p *serverProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *serverProc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// freePort gives a loopback TCP port that was free a moment ago.
// FreePort returns a loopback port nobody listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitReady polls ready until it succeeds, the server exits or 30 s pass.
func waitReady(t testing.TB, p *serverProc, what string, ready func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := ready(ctx)
		cancel()
		if err == nil {
			return
		}
		if !p.running() {
			t.Fatalf("%s exited while starting: %v\n%s", what, err, p.logTail())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready in 30 s: %v\n%s", what, err, p.logTail())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// pgServer is a private PostgreSQL instance.
type Postgres struct {
	t        testing.TB
	bin      string // directory of initdb and postgres
	base     string // socket directory, log, and data/
	port     int
	cred     *syscall.Credential
	proc     *serverProc
	Conninfo string
}

// StartPostgres starts a PostgreSQL server for this test and returns its
// conninfo (user postgres, database postgres, trust authentication).
func StartPostgres(t testing.TB) (conninfo string) {
	t.Helper()
	return NewPostgres(t).Conninfo
}

// NewPostgres starts a server the test can stop and restart.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		t.Fatalf("no PostgreSQL server under /usr/lib/postgresql/*/bin: install the Debian package postgresql (make deps)")
	}
	version := func(p string) int { // /usr/lib/postgresql/15/bin/initdb
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) < version(found[j]) })
	s := &Postgres{t: t, bin: filepath.Dir(found[len(found)-1])}

	// initdb and postgres refuse to run as root: run them as the
	// postgres user of the Debian package (or nobody) then, in a directory
	// of their own (t.TempDir's parents are closed to other users).
	base, err := os.MkdirTemp("", "gearshard-pg-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	s.base = base
	if os.Geteuid() == 0 {
		s.cred = runAsUser(t, "postgres", "nobody")
		if err := os.Chown(base, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatalf("chown %s: %v", base, err)
		}
	}
	initdb := exec.Command(filepath.Join(s.bin, "initdb"), "-D", filepath.Join(base, "data"),
		"-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = base
	initdb.Env = pgEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.port = FreePort(t)
	s.Conninfo = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5", s.port)
	s.Start()
	t.Cleanup(func() { s.proc.stop(syscall.SIGQUIT) })
	return s
}

// Start (again) starts the server on its data directory and port, and wait until
// it accepts connections.
func (s *Postgres) Start() {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.base, "data"), "-k", s.base,
		"-p", strconv.Itoa(s.port), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on",
		"-c", "max_connections=50", "-c", "shared_buffers=32MB")
	cmd.Dir = s.base
	cmd.Env = pgEnv()
	s.proc = launch(s.t, cmd, s.cred, filepath.Join(s.base, "postgres.log"))
	waitReady(s.t, s.proc, "postgres", func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, s.Conninfo)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
}

// Stop stops the server: SIGQUIT is an immediate shutdown (no checkpoint: the
// next start recovers from the WAL, as after a crash), SIGINT a fast one.
func (s *Postgres) Stop(sig syscall.Signal) { s.proc.stop(sig) }

// Signal sends sig to the postmaster and its children (each backend has
// a session of its own, so not a process group signal).
func (s *Postgres) Signal(sig syscall.Signal) {
	pid := s.proc.cmd.Process.Pid
	syscall.Kill(pid, sig)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if child, err := strconv.Atoi(filepath.Base(filepath.Dir(st))); err == nil {
				syscall.Kill(child, sig)
			}
		}
	}
}

func pgEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PG") && !strings.HasPrefix(e, "LC_") && !strings.HasPrefix(e, "LANG") {
			env = append(env, e)
		}
	}
	return append(env, "LC_ALL=C")
}

// runAsUser gives the credentials of the first of names that exists.
func runAsUser(t testing.TB, names ...string) *syscall.Credential {
	t.Helper()
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	t.Fatalf("running as root and none of the users %v exists to run the server as", names)
	return nil
}

// Redis is a private Redis instance with an fsync'ed AOF.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	proc *serverProc
	Addr string
}

// StartRedis starts a Redis server for this test (appendonly yes,
// appendfsync always, no snapshots) and returns its address.
func StartRedis(t testing.TB) (addr string) {
	t.Helper()
	return NewRedis(t).Addr
}

// NewRedis starts a server the test can stop and restart.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/redis-server"); serr != nil {
			t.Fatalf("redis-server not found: install the Debian package redis-server (make deps)")
		}
		bin = "/usr/bin/redis-server"
	}
	s := &Redis{t: t, bin: bin, dir: t.TempDir(), port: FreePort(t)}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", s.port)
	s.Start()
	t.Cleanup(func() { s.proc.stop(syscall.SIGKILL) })
	return s
}

func (s *Redis) Start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--protected-mode", "no")
	s.proc = launch(s.t, cmd, nil, filepath.Join(s.dir, "redis.log"))
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true, MaxRetries: -1})
	defer c.Close()
	waitReady(s.t, s.proc, "redis-server", func(ctx context.Context) error { return c.Ping(ctx).Err() })
}

// Stop stops the server; SIGKILL is a crash (the AOF keeps what was fsync'ed).
func (s *Redis) Stop(sig syscall.Signal) { s.proc.stop(sig) }

func (s *Redis) Signal(sig syscall.Signal) { syscall.Kill(-s.proc.cmd.Process.Pid, sig) }
