// Package queuetest starts real PostgreSQL, MariaDB, Redis and memcached
// servers (from the Debian packages postgresql, mariadb-server,
// redis-server and memcached) on
// loopback, on free ports, in temporary directories, for the tests of the
// persistent queue.
package queuetest

import (
	"bytes"
	"context"
	"database/sql"
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

	_ "github.com/go-sql-driver/mysql" // database/sql's "mysql"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// Real database servers for the tests: private instances on loopback, on
// free ports, in temporary directories, from the Debian packages
// postgresql, mariadb-server and redis-server (`make deps` installs them).

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

// FreePort returns a loopback TCP port that nobody listened on a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is what Postgres, MySQL and Redis share: a server process the test
// starts, can stop, freeze and start again on the same data and port, and
// stops at its end.
type server struct {
	t     testing.TB
	what  string                          // the program, in messages
	argv  []string                        // the command that runs it
	dir   string                          // its working directory ("": this process's)
	env   []string                        // its environment (nil: this process's)
	cred  *syscall.Credential             // whom it runs as (nil: this process's user)
	log   string                          // its log file
	ready func(ctx context.Context) error // returns nil once it accepts connections
	proc  *serverProc
}

// begin starts the server and has it stopped with sig at the end of the test.
func (s *server) begin(sig syscall.Signal) {
	s.t.Helper()
	s.Start()
	s.t.Cleanup(func() { s.Stop(sig) })
}

// Start (again) starts the server on its data and port and waits until it
// accepts connections: until ready succeeds, failing the test when the
// server exits first or 30 s pass.
func (s *server) Start() {
	s.t.Helper()
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir, cmd.Env = s.dir, s.env
	p := launch(s.t, cmd, s.cred, s.log)
	s.proc = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.ready(ctx)
		cancel()
		if err == nil {
			return
		}
		if !p.running() {
			s.t.Fatalf("%s exited while starting: %v\n%s", s.what, err, p.logTail())
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s not ready in 30 s: %v\n%s", s.what, err, p.logTail())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Stop sends sig to the server and waits for it to exit (SIGKILL after 20 s).
func (s *server) Stop(sig syscall.Signal) { s.proc.stop(sig) }

// Signal sends sig to the server's process group and to each child of the
// server process (PostgreSQL's backends each lead a session of their own,
// outside the group), so that SIGSTOP freezes all of it.
func (s *server) Signal(sig syscall.Signal) {
	pid := s.proc.cmd.Process.Pid
	syscall.Kill(-pid, sig)
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

// Postgres is a private PostgreSQL instance (user postgres, database
// postgres, trust authentication). Stop(SIGQUIT) is an immediate shutdown
// (no checkpoint: the next Start recovers from the WAL, as after a crash),
// Stop(SIGINT) a fast one.
type Postgres struct {
	server
	Conninfo string
}

// StartPostgres starts a PostgreSQL server for this test and returns its
// conninfo.
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
	bin := filepath.Dir(found[len(found)-1])

	// initdb and postgres refuse to run as root: run them as the
	// postgres user of the Debian package (or nobody) then, in a directory
	// of their own (t.TempDir's parents are closed to other users).
	base, err := os.MkdirTemp("", "gearshard-pg-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = runAsUser(t, "postgres", "nobody")
		if err := os.Chown(base, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("chown %s: %v", base, err)
		}
	}
	data := filepath.Join(base, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data,
		"-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = base
	initdb.Env = pgEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := FreePort(t)
	s := &Postgres{Conninfo: fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5", port)}
	s.server = server{t: t, what: "postgres", dir: base, env: pgEnv(), cred: cred, log: filepath.Join(base, "postgres.log"),
		argv: []string{filepath.Join(bin, "postgres"), "-D", data, "-k", base,
			"-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on",
			"-c", "max_connections=50", "-c", "shared_buffers=32MB"},
		ready: func(ctx context.Context) error {
			c, err := pgx.Connect(ctx, s.Conninfo)
			if err != nil {
				return err
			}
			return c.Close(ctx)
		}}
	s.begin(syscall.SIGQUIT)
	return s
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

// Redis is a private Redis instance with an fsync'ed AOF (appendonly yes,
// appendfsync always, no snapshots). Stop(SIGKILL) is a crash: the AOF
// keeps what was fsync'ed.
type Redis struct {
	server
	Addr string
}

// StartRedis starts a Redis server for this test and returns its address.
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
	dir, port := t.TempDir(), FreePort(t)
	s := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	s.server = server{t: t, what: "redis-server", log: filepath.Join(dir, "redis.log"),
		argv: []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--protected-mode", "no"},
		ready: func(ctx context.Context) error {
			c := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true, MaxRetries: -1})
			defer c.Close()
			return c.Ping(ctx).Err()
		}}
	s.begin(syscall.SIGKILL)
	return s
}

// Memcached is a private memcached instance with -M (it refuses new items
// when its memory is full, rather than evicting). It keeps nothing across
// a restart.
type Memcached struct {
	server
	Addr string
}

// NewMemcached starts a server the test can stop, freeze and restart;
// args are more memcached options (-I 2m, say).
func NewMemcached(t testing.TB, args ...string) *Memcached {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/memcached"); serr != nil {
			t.Fatalf("memcached not found: install the Debian package memcached (make deps)")
		}
		bin = "/usr/bin/memcached"
	}
	dir, port := t.TempDir(), FreePort(t)
	s := &Memcached{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	argv := []string{bin, "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-M", "-m", "256", "-t", "2"}
	if os.Geteuid() == 0 {
		argv = append(argv, "-u", "root") // memcached will not run as root unless told whom to be
	}
	s.server = server{t: t, what: "memcached", log: filepath.Join(dir, "memcached.log"),
		argv: append(argv, args...),
		ready: func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", s.Addr)
			if err != nil {
				return err
			}
			defer c.Close()
			if dl, ok := ctx.Deadline(); ok {
				c.SetDeadline(dl)
			}
			if _, err := c.Write([]byte("version\r\n")); err != nil {
				return err
			}
			b := make([]byte, 64)
			n, err := c.Read(b)
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(b[:n], []byte("VERSION ")) {
				return fmt.Errorf("answer to version: %q", b[:n])
			}
			return nil
		}}
	s.begin(syscall.SIGKILL)
	return s
}

// MySQL is a private MariaDB (or MySQL) instance, from the Debian package
// mariadb-server, with a database and a user of the tests' own, reached
// over TCP on loopback. Stop(SIGKILL) is a crash: InnoDB keeps what was
// committed (innodb_flush_log_at_trx_commit=1).
type MySQL struct {
	server
	Host     string
	Port     int
	Socket   string // the server's Unix socket
	User     string
	Password string
	DB       string
}

// NewMySQL starts a server the test can stop and restart.
func NewMySQL(t testing.TB) *MySQL {
	t.Helper()
	bin, err := exec.LookPath("mariadbd")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mariadbd"); err != nil {
			t.Fatalf("mariadbd not found: install the Debian package mariadb-server (make deps)")
		}
	}
	installDB, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		t.Fatalf("mariadb-install-db not found: install the Debian package mariadb-server (make deps)")
	}
	// As for PostgreSQL: as root, the server runs as mysql (or nobody) in
	// a directory of its own.
	base, err := os.MkdirTemp("", "gearshard-my-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	var userArg []string
	if os.Geteuid() == 0 {
		cred := runAsUser(t, "mysql", "nobody")
		if err := os.Chown(base, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("chown %s: %v", base, err)
		}
		u, _ := user.LookupId(strconv.Itoa(int(cred.Uid)))
		userArg = []string{"--user=" + u.Username}
	}
	data := filepath.Join(base, "data")
	install := exec.Command(installDB, append([]string{"--no-defaults", "--datadir=" + data,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}, userArg...)...)
	install.Dir = base
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	s := &MySQL{Host: "127.0.0.1", Port: FreePort(t), Socket: filepath.Join(base, "mysqld.sock"),
		User: "gearshard", Password: "queue-pw", DB: "gearman"}
	s.server = server{t: t, what: "mariadbd", dir: base, log: filepath.Join(base, "mariadbd.log"),
		argv: append([]string{bin, "--no-defaults", "--datadir=" + data, "--socket=" + s.Socket,
			"--port=" + strconv.Itoa(s.Port), "--bind-address=127.0.0.1", "--skip-name-resolve",
			"--innodb-buffer-pool-size=32M", "--innodb-log-file-size=48M", "--innodb-flush-log-at-trx-commit=1",
			"--pid-file=" + filepath.Join(base, "mariadbd.pid"), "--log-error=" + filepath.Join(base, "mariadbd.log")}, userArg...),
		ready: func(ctx context.Context) error {
			// Over the socket as root (no password after install) until
			// the test's user exists; then as that user over TCP.
			db, err := sql.Open("mysql", s.DSN())
			if err != nil {
				return err
			}
			defer db.Close()
			if err = db.PingContext(ctx); err == nil {
				return nil
			}
			root, rerr := sql.Open("mysql", "root@unix("+s.Socket+")/")
			if rerr != nil {
				return rerr
			}
			defer root.Close()
			for _, q := range []string{
				"CREATE DATABASE IF NOT EXISTS " + s.DB,
				"CREATE USER IF NOT EXISTS '" + s.User + "'@'127.0.0.1' IDENTIFIED BY '" + s.Password + "'",
				"GRANT ALL ON " + s.DB + ".* TO '" + s.User + "'@'127.0.0.1'",
			} {
				if _, rerr := root.ExecContext(ctx, q); rerr != nil {
					return fmt.Errorf("%v; as root: %s: %v", err, q, rerr)
				}
			}
			return db.PingContext(ctx)
		}}
	s.begin(syscall.SIGKILL)
	return s
}

// DSN is the test user's data source name, for database/sql.
func (s *MySQL) DSN() string {
	return fmt.Sprintf("%s:%s@tcp(%s:%d)/%s", s.User, s.Password, s.Host, s.Port, s.DB)
}
