package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/syslog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/netio"
	"gearshard/netio/monitor"
)

// ServeCmd takes gearmand's flags under gearmand's names.
type ServeCmd struct {
	Port              int           `short:"p" default:"4730" env:"GEARMAND_PORT" help:"Port the server listens on."`
	Listen            string        `short:"L" default:"" help:"Address the server listens on (default: all)."`
	Threads           int           `short:"t" default:"0" help:"Event loops (I/O threads); 0 means one per core."`
	Shards            int           `default:"0" help:"Job state shards; 0 means one per event loop."`
	Backlog           int           `short:"b" default:"32" help:"Number of backlog connections for listen."`
	JobRetries        int           `short:"j" default:"0" help:"Fail a job after this many worker losses (0 = retry forever; -1, as gearmand's current source spells it, too)."`
	RoundRobin        bool          `short:"R" help:"Accepted for gearmand compatibility: workers are always served round-robin across their functions."`
	WorkerWakeup      int           `short:"w" default:"0" help:"Workers to wake (NOOP) per queued job; 0 wakes all."`
	JobHandlePrefix   string        `default:"" help:"Job handle prefix (default: H:<hostname>)."`
	Exceptions        bool          `help:"Forward WORK_EXCEPTION to every client, not only those that asked."`
	LogFile           string        `short:"l" default:"stderr" help:"Log file, or stderr, or none."`
	Verbose           string        `default:"ERROR" enum:"FATAL,ALERT,CRITICAL,ERROR,WARNING,NOTICE,INFO,DEBUG" help:"Log level: FATAL ALERT CRITICAL ERROR WARNING NOTICE INFO DEBUG."`
	PidFile           string        `short:"P" default:"" help:"File to write the process ID to."`
	FileDescriptors   int           `short:"f" default:"0" help:"Number of file descriptors to allow (setrlimit); 0 keeps the current limit."`
	Protocol          []string      `short:"r" help:"Extra protocol to load: http (jobs from HTTP requests)."`
	HTTPPort          int           `name:"http-port" default:"8080" help:"Port of the HTTP front end (-r http)."`
	HTTPListen        string        `name:"http-listen" help:"Address of the HTTP front end (default: as -L)."`
	HTTPMaxBody       int64         `name:"http-max-body" default:"16777216" help:"Largest HTTP request body (the workload), in bytes."`
	HTTPMaxHeader     int           `name:"http-max-header" default:"16384" help:"Largest HTTP request header, in bytes."`
	HTTPReadTimeout   time.Duration `name:"http-read-timeout" default:"30s" help:"Time allowed to send a whole HTTP request."`
	Keepalive         bool          `help:"Enable TCP keepalive on connections."`
	KeepaliveIdle     int           `default:"-1" help:"Seconds of idleness before keepalive probes (-1: system default)."`
	KeepaliveInterval int           `default:"-1" help:"Seconds between keepalive probes (-1: system default)."`
	KeepaliveCount    int           `default:"-1" help:"Keepalive probes before the connection is dropped (-1: system default)."`
	HashtableBuckets  int           `default:"991" help:"Accepted for gearmand compatibility; the job table grows as needed."`
	MaxPacketSize     int           `default:"67108864" help:"Largest packet payload accepted, in bytes."`
	MaxOutputBytes    int           `default:"134217728" help:"Output that may wait for one slow reader before it is cut off, in bytes."`
	MaxQueueBytes     int64         `name:"max-queue-bytes" default:"-1" help:"Memory jobs may hold before new submissions are refused; -1 = half of physical memory, 0 = no limit."`
	MaxBufferedBytes  int64         `name:"max-buffered-bytes" default:"-1" help:"What all connections together may hold in buffers (output for slow readers, packets still arriving) beyond 64 KiB each; past it the connection holding the most is cut off (HTTP requests count too, and get 503); -1 = a quarter of physical memory, 0 = no limit."`
	SSL               bool          `name:"ssl" help:"Serve the Gearman port over TLS only."`
	SSLCAFile         string        `name:"ssl-ca-file" env:"GEARMAND_CA_CERTIFICATE" help:"CA certificates (PEM); when given, clients must present a certificate signed by one."`
	SSLCertificate    string        `name:"ssl-certificate" env:"GEARMAND_SERVER_PEM" default:"/etc/ssl/certs/gearmand.pem" help:"Server certificate (PEM)."`
	SSLKey            string        `name:"ssl-key" env:"GEARMAND_SERVER_KEY" default:"/etc/ssl/certs/gearmand.key" help:"Server private key (PEM)."`
	AdminAllow        []string      `name:"admin-allow" placeholder:"CIDR" help:"Networks besides loopback allowed to run admin commands that change state (shutdown, maxqueue, cancel job, create/drop function); repeatable."`
	MetricsListen     string        `name:"metrics-listen" placeholder:"ADDR" help:"Serve Prometheus metrics (/metrics), the stats as JSON (/api/stats) and a live dashboard (/) on host:port; off by default."`
	MetricsMaxFuncs   int           `name:"metrics-max-functions" default:"1000" help:"Functions with metrics of their own; later names are summed under function=\"_other_\"."`
	Version           bool          `short:"V" help:"Print the version and exit."`
	ShortHelp         bool          `short:"h" name:"h-help" hidden:"" help:"Show help, as gearmand -h (the client tools take -h as the host)."`
	Daemon            bool          `short:"d" help:"Run in the background: the command returns once the server is ready, or with its error."`
	User              string        `short:"u" help:"Switch to this user (root only) before the pid file, log file, queue and ports are opened."`
	ConfigFile        string        `name:"config-file" default:"${default_config_file}" help:"Options to read before the command line's, separated by white space; the command line wins. The default file is read when it exists."`
	Syslog            bool          `help:"Log to syslog too (as gearshard, facility user)."`
	Coredump          bool          `help:"On a crash, abort and dump core instead of printing a stack trace and exiting."`
	CheckArgs         bool          `name:"check-args" help:"Check the options and exit."`
	QueueFlags        `embed:""`
	CPUProfile        string `hidden:"" help:"Write a CPU profile here until shutdown (development)."`

	gcPercent   int // as tuneGC left them, for the ready line
	memoryLimit int64
}

// levels maps gearmand's verbosity names onto zerolog levels.
var levels = map[string]zerolog.Level{
	"FATAL": zerolog.FatalLevel, "ALERT": zerolog.FatalLevel, "CRITICAL": zerolog.FatalLevel,
	"ERROR": zerolog.ErrorLevel, "WARNING": zerolog.WarnLevel, "NOTICE": zerolog.InfoLevel,
	"INFO": zerolog.InfoLevel, "DEBUG": zerolog.DebugLevel,
}

func (c *ServeCmd) validate() error {
	switch {
	case c.Port < 0 || c.Port > 65535:
		return usagef("--port %d: must be 0..65535", c.Port)
	case c.MetricsMaxFuncs < 1:
		return usagef("--metrics-max-functions %d: must be at least 1", c.MetricsMaxFuncs)
	case c.Threads < 0:
		return usagef("--threads %d: must be >= 0", c.Threads)
	case c.Shards < 0:
		return usagef("--shards %d: must be >= 0", c.Shards)
	case c.JobRetries < -1 || c.JobRetries > 255:
		return usagef("--job-retries %d: must be 0..255, or -1 (no limit, as 0)", c.JobRetries)
	case c.WorkerWakeup < 0:
		return usagef("--worker-wakeup %d: must be >= 0", c.WorkerWakeup)
	case c.MaxPacketSize < 1024:
		return usagef("--max-packet-size %d: must be at least 1024", c.MaxPacketSize)
	case c.MaxOutputBytes < c.MaxPacketSize:
		return usagef("--max-output-bytes must be at least --max-packet-size")
	case c.MaxBufferedBytes > 0 && c.MaxBufferedBytes < int64(c.MaxPacketSize):
		return usagef("--max-buffered-bytes %d: must be at least --max-packet-size (%d), or 0 for no limit", c.MaxBufferedBytes, c.MaxPacketSize)
	}
	for _, p := range c.Protocol {
		if !strings.EqualFold(p, "http") {
			return usagef("--protocol %q: only http is available", p)
		}
	}
	if c.HTTPPort < 0 || c.HTTPPort > 65535 {
		return usagef("--http-port %d: must be 0..65535", c.HTTPPort)
	}
	if c.MetricsListen != "" {
		if _, _, err := splitListen(c.MetricsListen); err != nil {
			return usagef("--metrics-listen %q: %v", c.MetricsListen, err)
		}
	}
	return nil
}

// Run starts the server and blocks until it is stopped by a signal or the
// admin "shutdown" command.
func (c *ServeCmd) Run(std *stdio, args invocation, kctx *kong.Context) error {
	if c.Version {
		fmt.Fprintf(std.Out, "gearshard %s\n", Version)
		return nil
	}
	if c.ShortHelp {
		return kctx.PrintUsage(false)
	}
	if err := c.validate(); err != nil {
		return err
	}
	if c.CheckArgs {
		return nil
	}
	ready := daemonChild()
	if c.Daemon && ready == nil {
		return daemonize(args)
	}
	// gearmand's order: descriptors while still root, then the user, then
	// everything the server opens, as that user.
	c.gcPercent, c.memoryLimit = tuneGC(os.Getenv)
	if c.FileDescriptors > 0 {
		lim := syscall.Rlimit{Cur: uint64(c.FileDescriptors), Max: uint64(c.FileDescriptors)}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("--file-descriptors %d: %w", c.FileDescriptors, err)
		}
	}
	if c.User != "" {
		if err := switchUser(c.User); err != nil {
			return err
		}
	}
	if c.Coredump {
		debug.SetTraceback("crash")
	}
	var toSyslog func() (*syslog.Writer, error)
	if c.Syslog {
		toSyslog = localSyslog
	}
	log, reopenLog, closeLog, err := openLog(c.LogFile, levels[strings.ToUpper(c.Verbose)], toSyslog)
	if err != nil {
		return err
	}
	defer closeLog()
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// Signals are caught before the port opens: a SIGTERM or SIGUSR1 that
	// arrives as soon as the server is ready must not kill it outright.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	srv, err := c.start(log)
	if err != nil {
		return err
	}
	if c.PidFile != "" {
		defer removePidFile(c.PidFile)
	}
	if ready != nil {
		if err := ready(); err != nil {
			srv.shutdown(false)
			_ = srv.wait()
			return err
		}
	}
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				if err := reopenLog(); err != nil {
					log.Error().Err(err).Msg("reopening the log file")
				}
				log.Info().Msg("log file reopened")
				continue
			}
			log.Info().Str("signal", sig.String()).Msg("shutting down")
			// Not in this goroutine: a graceful shutdown waits for the
			// jobs, and a SIGTERM meanwhile must still be heard.
			go srv.shutdown(sig == syscall.SIGUSR1)
		}
	}()
	return srv.wait()
}

// server is a running gearshard: engine, admin and network layer.
type server struct {
	httpAddr    string   // the HTTP front end's address, when -r http
	metricsAddr string   // the monitor's address, when --metrics-listen
	stopExtra   []func() // stop the HTTP front end and the monitor
	eng         *engine.Engine
	store       engine.Store // nil for the builtin queue
	net         *netio.Server
	log         zerolog.Logger
	errc        chan error
	drainOnce   sync.Once
	stopOnce    sync.Once
	abortOnce   sync.Once
	abort       chan struct{} // closed by a shutdown that is not graceful
}

// start builds and starts a server from the flags; it returns once the
// port accepts connections.
func (c *ServeCmd) start(log zerolog.Logger) (*server, error) {
	loops := c.Threads
	if loops == 0 {
		loops = runtime.NumCPU()
	}
	shards := c.Shards
	if shards == 0 {
		shards = loops
	}
	store, err := c.openStore(log)
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.Options{
		Store:         store,
		MaxQueueBytes: c.maxQueueBytes(),
		Shards:        shards,
		HandlePrefix:  c.JobHandlePrefix,
		JobRetries:    max(c.JobRetries, 0), // -1: no limit, as 0
		WorkerWakeup:  c.WorkerWakeup,
		Exceptions:    c.Exceptions,
		Log:           log,
	})
	if err != nil {
		closeStore(store, log)
		return nil, usageError{err.Error()}
	}
	// Jobs the store kept are back in their shards before the port opens.
	if n, err := eng.Replay(); err != nil {
		closeStore(store, log)
		return nil, fmt.Errorf("replaying the persistent queue: %w", err)
	} else if n > 0 {
		log.Info().Int("jobs", n).Str("queue", c.QueueType).Msg("replayed background jobs")
	}
	s := &server{eng: eng, store: store, log: log, errc: make(chan error, 1), abort: make(chan struct{})}
	allow, err := parseNets(c.AdminAllow)
	if err != nil {
		closeStore(store, log)
		return nil, err
	}
	verbose := strings.ToUpper(c.Verbose)
	adm := engine.NewAdmin(eng, engine.AdminConfig{
		Version:  Version,
		PID:      os.Getpid(),
		Verbose:  func() string { return verbose },
		Shutdown: func(graceful bool) { go s.shutdown(graceful) },
		Allow:    allow,
	})
	keep := func(sec int) time.Duration {
		if sec <= 0 {
			return 0
		}
		return time.Duration(sec) * time.Second
	}
	maxBuffered := c.maxBufferedBytes()
	maxConns, err := netio.ConnectionBudget(loops, c.Backlog)
	if err != nil {
		eng.Close()
		closeStore(store, log)
		return nil, usageError{"--file-descriptors: " + err.Error()}
	}
	s.net = netio.New(eng, adm, netio.Options{
		Listen:            c.Listen,
		Port:              c.Port,
		Loops:             loops,
		Backlog:           c.Backlog,
		MaxPacket:         c.MaxPacketSize,
		MaxOutput:         c.MaxOutputBytes,
		MaxConns:          maxConns,
		MaxBuffered:       maxBuffered,
		KeepAlive:         c.Keepalive,
		KeepAliveIdle:     keep(c.KeepaliveIdle),
		KeepAliveInterval: keep(c.KeepaliveInterval),
		KeepAliveCount:    max(c.KeepaliveCount, 0),
		Log:               log,
	})
	if c.SSL {
		cfg, err := netio.TLSConfig(c.SSLCertificate, c.SSLKey, c.SSLCAFile)
		if err != nil {
			eng.Close()
			closeStore(store, log)
			return nil, usageError{err.Error()}
		}
		l, err := netio.ListenAll(context.Background(), c.Listen, c.Port)
		if err != nil {
			eng.Close()
			closeStore(store, log)
			return nil, fmt.Errorf("cannot listen on %s: %w", hostPort(c.Listen, c.Port), err)
		}
		go func() { s.errc <- s.net.ServeTLS(l, cfg) }()
	} else {
		go func() { s.errc <- s.net.Serve() }()
	}
	if s.net.WaitReady() == nil {
		err := <-s.errc
		eng.Close()
		closeStore(store, log)
		return nil, fmt.Errorf("cannot listen on %s: %w", hostPort(c.Listen, c.Port), err)
	}
	if len(c.Protocol) > 0 {
		host := c.HTTPListen
		if host == "" {
			host = c.Listen
		}
		opts := netio.HTTPOptions{MaxBody: c.HTTPMaxBody, MaxHeader: c.HTTPMaxHeader, ReadTimeout: c.HTTPReadTimeout}
		addr, err := s.serveExtra("HTTP front end", host, c.HTTPPort,
			func(ctx context.Context, l net.Listener) error {
				return s.net.ServeHTTPFrontEnd(ctx, s.net.LimitHTTP(l), opts)
			})
		if err != nil {
			return nil, err
		}
		s.httpAddr = addr
	}
	if c.MetricsListen != "" {
		mon := monitor.New(eng, monitor.Options{Version: Version, MaxFunctions: c.MetricsMaxFuncs, Refused: s.net.Refused, BufferCutoffs: s.net.BufferCutoffs})
		host, port, _ := splitListen(c.MetricsListen) // checked by validate
		addr, err := s.serveExtra("metrics and dashboard", host, port, func(ctx context.Context, l net.Listener) error {
			return mon.Serve(ctx, netio.LimitConns(l, netio.MetricsConns))
		})
		if err != nil {
			return nil, err
		}
		s.metricsAddr = addr
	}
	// Written once the ports are open, so that a start that fails (a port
	// in use) never overwrites, then removes, a running server's pid file;
	// and before the ready line, which says the server is up.
	if c.PidFile != "" {
		if err := os.WriteFile(c.PidFile, pidLine(), 0o644); err != nil {
			s.shutdown(false)
			_ = s.wait()
			return nil, fmt.Errorf("--pid-file: %w", err)
		}
	}
	log.Info().Str("addr", s.net.WaitReady().String()).Int("loops", loops).Int("shards", shards).
		Int64("max_connections", maxConns).Int64("max_buffered_bytes", maxBuffered).Int("gc_percent", c.gcPercent).Int64("memory_limit", c.memoryLimit).
		Str("version", Version).Msg("gearshard ready")
	return s, nil
}

// serveExtra starts a listener beside the Gearman port; failing to bind
// stops the whole server, as a bad -p would.
func (s *server) serveExtra(what, host string, port int, serve func(context.Context, net.Listener) error) (string, error) {
	l, err := netio.ListenAll(context.Background(), host, port)
	if err != nil {
		s.shutdown(false)
		_ = s.wait()
		return "", fmt.Errorf("%s: %w", what, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopExtra = append(s.stopExtra, cancel)
	go func() {
		if err := serve(ctx, l); err != nil {
			s.log.Error().Err(err).Str("listener", what).Msg("stopped")
		}
	}()
	for _, a := range netio.ListenerAddrs(l) {
		s.log.Info().Str("addr", a.String()).Msg(what + " listening")
	}
	return l.Addr().String(), nil
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// splitListen reads a host:port flag; the port may be a service name.
func splitListen(hostPort string) (string, int, error) {
	host, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", 0, err
	}
	port, err := net.LookupPort("tcp", p)
	return host, port, err
}

// shutdown stops the server; graceful first stops taking connections and,
// as gearmand, waits until no job is left, queued ones included (the open
// connections are served meanwhile, and SIGTERM still stops at once).
func (s *server) shutdown(graceful bool) {
	if graceful {
		s.drainOnce.Do(s.net.Drain)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for s.eng.LiveJobs() > 0 {
			select {
			case <-s.abort:
				return // a shutdown that is not graceful stops the server
			case <-tick.C:
			}
		}
	} else {
		s.abortOnce.Do(func() { close(s.abort) })
	}
	s.stopOnce.Do(func() {
		for _, stop := range s.stopExtra {
			stop()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.net.Stop(ctx); err != nil {
			s.log.Error().Err(err).Msg("stopping the network layer")
		}
	})
}

// addr is the bound address, host:port.
func (s *server) addr() string { return s.net.WaitReady().String() }

// wait blocks until the network layer has stopped.
func (s *server) wait() error {
	err := <-s.errc
	s.eng.Close()
	closeStore(s.store, s.log) // after the network: pending writes are flushed
	return err
}

// pidLine is what the pid file holds.
func pidLine() []byte { return []byte(strconv.Itoa(os.Getpid()) + "\n") }

// removePidFile removes the pid file at exit, unless a later server has
// written its own there.
func removePidFile(path string) {
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, pidLine()) {
		_ = os.Remove(path)
	}
}

func closeStore(st engine.Store, log zerolog.Logger) {
	if st == nil {
		return
	}
	if err := st.Close(); err != nil {
		log.Error().Err(err).Msg("closing the persistent queue")
	}
}

// openLog opens the log destination: "stderr", "none" or a file, and the
// syslog that toSyslog connects to, if given. For a file, reopen (on
// SIGHUP, as gearmand) starts a new file at the same path, for log rotation.
func openLog(dest string, level zerolog.Level, toSyslog func() (*syslog.Writer, error)) (log zerolog.Logger, reopen func() error, closeFn func(), err error) {
	var writers []io.Writer
	reopen = func() error { return nil }
	var closers []func()
	switch strings.ToLower(dest) {
	case "none":
	case "stderr", "":
		var w io.Writer = os.Stderr
		if isatty.IsTerminal(os.Stderr.Fd()) {
			w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339}
		}
		writers = append(writers, w)
	default:
		lf := &logFile{path: dest}
		if err := lf.reopen(); err != nil {
			return zerolog.Logger{}, nil, nil, fmt.Errorf("--log-file: %w", err)
		}
		writers, reopen, closers = append(writers, lf), lf.reopen, append(closers, lf.close)
	}
	var syslogErr error
	if toSyslog != nil {
		// Like gearmand's openlog, a missing syslog daemon is not fatal: the
		// other destination says so, and the server runs.
		if sw, err := toSyslog(); err != nil {
			syslogErr = err
		} else {
			writers, closers = append(writers, zerolog.SyslogLevelWriter(sw)), append(closers, func() { sw.Close() })
		}
	}
	closeFn = func() {
		for _, c := range closers {
			c()
		}
	}
	if len(writers) == 0 {
		return zerolog.Nop(), reopen, closeFn, nil
	}
	log = zerolog.New(zerolog.MultiLevelWriter(writers...)).Level(level).With().Timestamp().Logger()
	if syslogErr != nil {
		log.Warn().Err(syslogErr).Msg("--syslog: no syslog to log to")
	}
	return log, reopen, closeFn, nil
}

// localSyslog connects to the local syslog daemon, as gearmand's openlog:
// facility user, the process ID in every line.
func localSyslog() (*syslog.Writer, error) {
	return syslog.New(syslog.LOG_USER|syslog.LOG_INFO, "gearshard")
}

// logFile is a log file that can be reopened while in use.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

func (l *logFile) reopen() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *logFile) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Close()
}

// parseNets reads --admin-allow values: CIDR blocks or single addresses.
func parseNets(specs []string) ([]*net.IPNet, error) {
	var nets []*net.IPNet
	for _, spec := range specs {
		for _, v := range strings.Split(spec, ",") {
			if ip := net.ParseIP(v); ip != nil {
				bits := 8 * len(ip.To16())
				if ip.To4() != nil {
					ip, bits = ip.To4(), 32
				}
				nets = append(nets, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
				continue
			}
			_, n, err := net.ParseCIDR(v)
			if err != nil {
				return nil, usagef("--admin-allow %q: not an address or CIDR block", v)
			}
			nets = append(nets, n)
		}
	}
	return nets, nil
}

// maxQueueBytes resolves --max-queue-bytes: by default half of the
// machine's memory, so a flood of submissions meets an ERROR, not the
// out-of-memory killer.
func (c *ServeCmd) maxQueueBytes() int64 { return memoryShare(c.MaxQueueBytes, 2) }

// maxBufferedBytes resolves --max-buffered-bytes: by default a quarter of
// the machine's memory (never less than one largest packet, which must be
// able to arrive), so a few hundred slow readers or slow senders meet a
// cut-off, not the out-of-memory killer.
func (c *ServeCmd) maxBufferedBytes() int64 {
	n := memoryShare(c.MaxBufferedBytes, 4)
	if c.MaxBufferedBytes < 0 && n > 0 {
		n = max(n, int64(c.MaxPacketSize))
	}
	return n
}

// memoryShare resolves a memory limit flag: a value of 0 or more is taken
// as given (0 = no limit); a negative one means the machine's physical
// memory divided by div (0, no limit, when it cannot be read).
func memoryShare(flag, div int64) int64 {
	if flag >= 0 {
		return flag
	}
	return physicalMemory() / div
}

// physicalMemory is the machine's RAM in bytes, or 0 when it cannot be read.
func physicalMemory() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
