package main

// Command-line tests: run(args, stdout, stderr) as main calls it, with
// gearmand's flag names, exit codes and messages.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// TestCLIRun runs command lines that exit at once: -V and --help exit 0,
// an unknown flag or a bad value exits 2 with one clear line on stderr.
func TestCLIRun(t *testing.T) {
	t.Parallel()
	version := "gearshard " + Version + "\n"
	for _, c := range []struct {
		args   string
		code   int
		stdout string
		stderr string // exact, unless prefix is set
		prefix bool
	}{
		{args: "-V", code: 0, stdout: version},
		{args: "--version", code: 0, stdout: version},
		{args: "serve -V", code: 0, stdout: version},
		// gearmand-style flags all parse; -V then prints and exits.
		{args: "-p 0 -L 127.0.0.1 -t 2 -j 3 -w 1 -R --verbose INFO -V", code: 0, stdout: version},
		{args: "-p 4730 -L 0.0.0.0 -b 64 -j 255 -w 0 -l none -P /tmp/x.pid -f 0 -q builtin --job-handle-prefix H:x " +
			"--exceptions --keepalive --keepalive-idle 5 --keepalive-interval 5 --keepalive-count 3 " +
			"--hashtable-buckets 991 --verbose DEBUG --threads 0 -V", code: 0, stdout: version},
		{args: "-q BuiltIn -V", code: 0, stdout: version},

		{args: "--bogus", code: 2, stderr: "gearshard: unknown flag --bogus\n"},
		{args: "extra", code: 2, stderr: "gearshard: unexpected argument extra\n"},
		{args: "-p abc", code: 2, stderr: "gearshard: --port: expected a valid 64 bit int but got \"abc\"\n"},
		{args: "--verbose LOUD", code: 2, stderr: `gearshard: --verbose must be one of "FATAL","ALERT","CRITICAL","ERROR","WARNING","NOTICE","INFO","DEBUG" but got "LOUD"` + "\n"},
		{args: "-j 300", code: 2, stderr: "gearshard: --job-retries 300: must be 0..255, or -1 (no limit, as 0)\n"},
		{args: "--job-retries=-2", code: 2, stderr: "gearshard: --job-retries -2: must be 0..255, or -1 (no limit, as 0)\n"},
		// gearmand's current source spells "no limit" -1 (1.1.20 takes it too).
		{args: "--check-args --job-retries=-1", code: 0},
		// A negative number after a flag is its value, as for gearmand.
		{args: "--check-args -j -1", code: 0},
		{args: "--check-args --job-retries -1", code: 0},
		{args: "--check-args -j -2", code: 2, stderr: "gearshard: --job-retries -2: must be 0..255, or -1 (no limit, as 0)\n"},
		{args: "--check-args --threads -1", code: 2, stderr: "gearshard: --threads -1: must be >= 0\n"},
		{args: "-R -1", code: 2, stderr: "gearshard: unknown flag -1, did you mean one of \"-p\", \"-L\", \"-t\", \"-b\", \"-j\", \"-R\", \"-w\", \"-l\", \"-P\", \"-f\", \"-r\", \"-V\", \"-h\", \"-d\", \"-u\", \"-q\"?\n"},
		{args: "-p 70000", code: 2, stderr: "gearshard: --port 70000: must be 0..65535\n"},
		{args: "--threads=-1", code: 2, stderr: "gearshard: --threads -1: must be >= 0\n"},
		{args: "--worker-wakeup=-2", code: 2, stderr: "gearshard: --worker-wakeup -2: must be >= 0\n"},
		{args: "-q memcache", code: 2, stderr: "gearshard: --queue-type \"memcache\": want builtin, libsqlite3, Postgres, MySQL, redis or libmemcached\n"},
		{args: "-q libmemcached", code: 2, stderr: "gearshard: libmemcached queue: no servers: give --libmemcached-servers host[:port],...\n"},
		{args: "-q libmemcached --libmemcached-servers mc:x", code: 2, stderr: "gearshard: libmemcached queue: server \"mc:x\": bad port \"x\"\n"},
		{args: "-q libsqlite3", code: 2, stderr: "gearshard: -q libsqlite3 needs --libsqlite3-db FILE\n"},
		{args: "--admin-allow 10.0.0.0/33", code: 2, stderr: "gearshard: --admin-allow \"10.0.0.0/33\": not an address or CIDR block\n"},
		{args: "-r gopher", code: 2, stderr: "gearshard: --protocol \"gopher\": only http is available\n"},
		{args: "-r http --http-port 70000", code: 2, stderr: "gearshard: --http-port 70000: must be 0..65535\n"},
		{args: "--max-packet-size 10", code: 2, stderr: "gearshard: --max-packet-size 10: must be at least 1024\n"},
		{args: "--max-buffered-bytes 1000", code: 2, stderr: "gearshard: --max-buffered-bytes 1000: must be at least --max-packet-size (67108864), or 0 for no limit\n"},
		{args: "--max-packet-size 4096 --max-output-bytes 4096 --max-buffered-bytes 4095", code: 2, stderr: "gearshard: --max-buffered-bytes 4095: must be at least --max-packet-size (4096), or 0 for no limit\n"},
		{args: "--metrics-max-functions 0", code: 2, stderr: "gearshard: --metrics-max-functions 0: must be at least 1\n"},
		{args: "--metrics-listen 127.0.0.1:99999", code: 2, stderr: "gearshard: --metrics-listen \"127.0.0.1:99999\": address 99999: invalid port\n"},
		{args: "--metrics-listen 192.0.2.1:0", code: 1, stderr: "gearshard: metrics and dashboard: listen tcp4 192.0.2.1:0: bind: cannot assign requested address\n"},

		// A flag given twice is refused, as gearmand and gearadmin refuse it;
		// gearman's tools keep the last (the client dials port 1).
		{args: "--check-args -L 127.0.0.1 -L ::1", code: 2, stderr: "gearshard: option '--listen' cannot be specified more than once\n"},
		{args: "--check-args -p 1 --port=2", code: 2, stderr: "gearshard: option '--port' cannot be specified more than once\n"},
		{args: "--check-args -d -d", code: 2, stderr: "gearshard: option '--daemon' cannot be specified more than once\n"},
		{args: "admin --status --status", code: 2, stderr: "gearshard: option '--status' cannot be specified more than once\n"},
		{args: "client -h 127.0.0.1 -p 2 -p 1 -f x y", code: 1, stderr: "gearshard: could not connect to 127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused\n"},

		// gearmand's hidden --check-args: the options are checked, nothing runs.
		{args: "--check-args -p 0 -j 3 -d -u nobody", code: 0},
		{args: "--check-args -j 300", code: 2, stderr: "gearshard: --job-retries 300: must be 0..255, or -1 (no limit, as 0)\n"},

		{args: "--help", code: 0, stdout: "Usage: gearshard <command>", prefix: true},
		// gearmand -h is its help; the client tools keep -h for the host.
		{args: "-h", code: 0, stdout: "Usage: gearshard serve [flags]", prefix: true},
		{args: "-p 0 -h", code: 0, stdout: "Usage: gearshard serve [flags]", prefix: true},
	} {
		t.Run(c.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(strings.Fields(c.args), &stdout, &stderr)
			okOut := stdout.String() == c.stdout || (c.prefix && strings.HasPrefix(stdout.String(), c.stdout))
			if code != c.code || !okOut || stderr.String() != c.stderr {
				t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d, stdout %q, stderr %q",
					c.args, code, stdout.String(), stderr.String(), c.code, c.stdout, c.stderr)
			}
		})
	}
}

// parseServe parses a command line into the CLI struct as main's parser
// does, without running it.
func parseServe(t *testing.T, args ...string) ServeCmd {
	t.Helper()
	var cli CLI
	parser, err := newParser(&cli, io.Discard, io.Discard, func(int) { t.Fatalf("parser exited on %q", args) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return cli.Serve
}

// TestCLIFlagNames checks that gearmand's short flags land in the right
// fields, and that no flag leaves gearmand's defaults (testServeCmd is
// what the interop tests start from).
func TestCLIFlagNames(t *testing.T) {
	t.Setenv("GEARMAND_PORT", "")
	os.Unsetenv("GEARMAND_PORT") // restored by t.Setenv's cleanup

	def := testServeCmd()
	want := ServeCmd{
		Port: 4730, Listen: "", Threads: 0, Shards: 0, Backlog: 32, JobRetries: 0, WorkerWakeup: 0,
		JobHandlePrefix: "", LogFile: "stderr", Verbose: "ERROR", PidFile: "", FileDescriptors: 0,
		QueueFlags: QueueFlags{QueueType: "builtin", Libsqlite3Table: "gearman_queue", LibpqTable: "queue",
			MySQLHost: "localhost", MySQLPort: 3306, MySQLTable: "gearman_queue",
			RedisServer: "127.0.0.1", RedisPort: 6379, RedisPrefix: "_gear_", LibmemcachedPrefix: "gear_"},
		KeepaliveIdle: -1, KeepaliveInterval: -1, KeepaliveCount: -1,
		HashtableBuckets: 991, MaxPacketSize: 64 << 20, MaxOutputBytes: 128 << 20,
		MaxQueueBytes: -1, MaxBufferedBytes: -1, HTTPPort: 8080, SSLCertificate: "/etc/ssl/certs/gearmand.pem", SSLKey: "/etc/ssl/certs/gearmand.key", HTTPMaxBody: 16 << 20, HTTPMaxHeader: 16 << 10, HTTPReadTimeout: 30 * time.Second,
		MetricsMaxFuncs: 1000, ConfigFile: "/etc/gearmand.conf",
	}
	if !equalServe(def, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", def, want)
	}

	got := parseServe(t, strings.Fields("-p 0 -L 127.0.0.1 -t 2 -j 3 -w 1 -R --verbose INFO -V -b 7 -l none -P /p -f 9 -q BUILTIN -d -u gearman")...)
	want = def
	want.Port, want.Listen, want.Threads, want.JobRetries, want.WorkerWakeup = 0, "127.0.0.1", 2, 3, 1
	want.RoundRobin, want.Verbose, want.Version = true, "INFO", true
	want.Backlog, want.LogFile, want.PidFile, want.FileDescriptors, want.QueueType = 7, "none", "/p", 9, "BUILTIN"
	want.Daemon, want.User = true, "gearman"
	if !equalServe(got, want) {
		t.Errorf("gearmand flags:\n got %+v\nwant %+v", got, want)
	}

	// gearmand's MySQL flags, as Debian's gearman-job-server spells them.
	got = parseServe(t, strings.Fields("-q MySQL --mysql-host=db1 --mysql-port=3307 --mysql-user=gm --mysql-password=pw --mysql-db=jobs --mysql-table=q")...)
	want = def
	want.QueueType = "MySQL"
	want.MySQLHost, want.MySQLPort, want.MySQLUser, want.MySQLPassword, want.MySQLDB, want.MySQLTable = "db1", 3307, "gm", "pw", "jobs", "q"
	if !equalServe(got, want) {
		t.Errorf("MySQL flags:\n got %+v\nwant %+v", got, want)
	}

	// gearmand's libmemcached flags.
	got = parseServe(t, strings.Fields("-q libmemcached --libmemcached-servers=mc1:11211,mc2 --libmemcached-prefix=jobs_")...)
	want = def
	want.QueueType, want.LibmemcachedServers, want.LibmemcachedPrefix = "libmemcached", "mc1:11211,mc2", "jobs_"
	if !equalServe(got, want) {
		t.Errorf("libmemcached flags:\n got %+v\nwant %+v", got, want)
	}

	// GEARMAND_PORT sets the port unless -p is given, as in gearmand.
	t.Setenv("GEARMAND_PORT", "4999")
	if p := parseServe(t).Port; p != 4999 {
		t.Errorf("GEARMAND_PORT=4999: port %d", p)
	}
	if p := parseServe(t, "-p", "5000").Port; p != 5000 {
		t.Errorf("GEARMAND_PORT=4999 -p 5000: port %d", p)
	}
}

// TestCLIMaxBufferedBytes resolves --max-buffered-bytes: a quarter of the
// machine's memory by default, 0 for no budget, a value as given; one
// below --max-packet-size is refused (TestCLIRun), one equal to it not.
func TestCLIMaxBufferedBytes(t *testing.T) {
	quarter := memTotal(t) / 4 // /proc/meminfo, not the sysinfo call the flag uses
	for _, c := range []struct {
		args []string
		want int64
	}{
		{nil, quarter},
		{[]string{"--max-buffered-bytes=-1"}, quarter},
		{[]string{"--max-buffered-bytes", "0"}, 0},
		{[]string{"--max-buffered-bytes", "67108864"}, 64 << 20},
		{[]string{"--max-buffered-bytes", "1073741824"}, 1 << 30},
	} {
		cmd := parseServe(t, c.args...)
		if err := cmd.validate(); err != nil {
			t.Errorf("%q: %v", c.args, err)
		}
		if got := cmd.maxBufferedBytes(); got != c.want {
			t.Errorf("%q: max buffered bytes %d, want %d", c.args, got, c.want)
		}
	}
	// The queue limit shares the helper: half, where this is a quarter.
	def := parseServe(t)
	if got := def.maxQueueBytes(); got != memTotal(t)/2 {
		t.Errorf("max queue bytes %d, want %d", got, memTotal(t)/2)
	}
}

func equalServe(a, b ServeCmd) bool {
	if len(a.Protocol) == 0 && len(b.Protocol) == 0 {
		a.Protocol, b.Protocol = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// TestCLIServe runs the server through run() with gearmand's flags on an
// ephemeral port, talks to it, and stops it with the admin "shutdown".
func TestCLIServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logFile, pidFile := filepath.Join(dir, "gearshard.log"), filepath.Join(dir, "gearshard.pid")
	args := []string{"-p", "0", "-L", "127.0.0.1", "-t", "2", "-j", "3", "-w", "1", "-R", "--verbose", "INFO",
		"-l", logFile, "-P", pidFile, "--job-handle-prefix", "H:cli"}
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, &stdout, &stderr) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			// Stop the server the test could not stop, so run returns.
			if addr := readyAddr(logFile); addr != "" {
				if c, err := net.Dial("tcp", addr); err == nil {
					c.Write([]byte("shutdown\n"))
					c.Close()
				}
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("run did not return")
			}
		}
	})

	var addr string
	waitFor(t, "the \"gearshard ready\" log line", func() (bool, string) {
		select {
		case code := <-done:
			stopped = true
			t.Fatalf("run returned %d early; stdout %q stderr %q", code, stdout.String(), stderr.String())
		default:
		}
		addr = readyAddr(logFile)
		b, _ := os.ReadFile(logFile)
		return addr != "", string(b)
	})
	host, _, _ := net.SplitHostPort(addr)
	if host != "127.0.0.1" {
		t.Fatalf("listening on %s; want 127.0.0.1", addr)
	}

	pid := strconv.Itoa(os.Getpid())
	if b, err := os.ReadFile(pidFile); err != nil || string(b) != pid+"\n" {
		t.Fatalf("pid file: %q, %v; want %q", b, err, pid+"\n")
	}
	c := gstest.Dial(t, addr)
	for line, want := range map[string]string{
		"verbose": "OK INFO\n",
		"version": "OK " + Version + "\n",
		"getpid":  "OK " + pid + "\n",
	} {
		if got := c.Admin(line); got != want {
			t.Errorf("admin %s: %q; want %q", line, got, want)
		}
	}
	c.Send(wire.SubmitJobBG, "fn", "", "data")
	if p := c.Expect(wire.JobCreated); !strings.HasPrefix(p.Fields[0], "H:cli:") {
		t.Errorf("JOB_CREATED %q: want the H:cli prefix", p.Fields[0])
	}

	if got := c.Admin("shutdown"); got != "OK\r\n" {
		t.Fatalf("shutdown: %q", got)
	}
	select {
	case code := <-done:
		stopped = true
		if code != 0 || stdout.String() != "" || stderr.String() != "" {
			t.Fatalf("run = %d, stdout %q, stderr %q; want 0 and no output", code, stdout.String(), stderr.String())
		}
	case <-time.After(waitTimeout):
		t.Fatalf("run did not return after shutdown")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind after shutdown: %v", err)
	}
}

// readyAddr returns the address in the log's "gearshard ready" line, or "".
func readyAddr(logFile string) string {
	f, err := os.Open(logFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct{ Message, Addr string }
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Message == "gearshard ready" {
			return rec.Addr
		}
	}
	return ""
}

// busyPort returns a loopback port that is taken until the test ends.
func busyPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// TestCLIRunErrors covers failures after parsing: they exit 1 with the
// cause on stderr.
func TestCLIRunErrors(t *testing.T) {
	t.Parallel()
	busy := busyPort(t)
	missing := filepath.Join(t.TempDir(), "no", "such")
	for _, c := range []struct {
		args, stderr string
	}{
		{"-p " + strconv.Itoa(busy) + " -L 127.0.0.1 -l none",
			"gearshard: cannot listen on 127.0.0.1:" + strconv.Itoa(busy) + ": bind: address already in use\n"},
		{"-p 0 -L 127.0.0.1 -l none -P " + missing, "gearshard: --pid-file: open " + missing + ": no such file or directory\n"},
		{"-p 0 -L 127.0.0.1 -l " + missing, "gearshard: --log-file: open " + missing + ": no such file or directory\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(strings.Fields(c.args), &stdout, &stderr)
		if code != 1 || stdout.String() != "" || stderr.String() != c.stderr {
			t.Errorf("run(%q) = %d, stdout %q, stderr %q; want 1, stderr %q", c.args, code, stdout.String(), stderr.String(), c.stderr)
		}
	}
}

// A start that fails because the port is taken, by a server that wrote the
// same pid file, leaves that file alone: it neither overwrites nor removes
// the running server's pid.
func TestFailedStartLeavesPidFile(t *testing.T) {
	t.Parallel()
	busy := busyPort(t)
	pidFile := filepath.Join(t.TempDir(), "gearshard.pid")
	const running = "4242\n"
	if err := os.WriteFile(pidFile, []byte(running), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-p", strconv.Itoa(busy), "-L", "127.0.0.1", "-l", "none", "-P", pidFile}, &stdout, &stderr); code != 1 {
		t.Fatalf("start on a busy port: exit %d, stderr %q; want 1", code, stderr.String())
	}
	if b, err := os.ReadFile(pidFile); err != nil || string(b) != running {
		t.Fatalf("pid file after the failed start: %q, %v; want %q", b, err, running)
	}
}

// memTotal is MemTotal from /proc/meminfo in bytes: the machine's memory
// as the tests read it, apart from the server's own way.
func memTotal(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// `make run -- FLAGS` gives the server the Makefile's defaults only for the
// flags not among FLAGS: the server refuses a flag given twice, so
// `make run -- --verbose DEBUG` must not pass --verbose INFO as well.
func TestMakeRunDefaultsGiveWay(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ args, want string }{
		{"", "-L 127.0.0.1 -p 4730 -l stderr --verbose INFO"},
		{"--verbose DEBUG -p 24770", "-L 127.0.0.1 -l stderr --verbose DEBUG -p 24770"},
		{"-L ::1 --port 24771 --log-file none -j 3", "--verbose INFO -L ::1 --port 24771 --log-file none -j 3"},
	} {
		cmd := exec.Command("make", append([]string{"-s", "-n", "-C", "../..", "run", "--"}, strings.Fields(c.args)...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("make run -- %s: %v", c.args, err)
		}
		var got string
		for _, line := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutPrefix(line, "./bin/gearshard "); ok {
				got = strings.Join(strings.Fields(rest), " ")
			}
		}
		if got != c.want {
			t.Errorf("make run -- %s: server flags %q, want %q", c.args, got, c.want)
		}
	}
}
