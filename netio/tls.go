package netio

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gearshard/engine"
)

// TLSConfig builds the server's TLS settings from gearmand's flags: a
// certificate and key, and when a CA file is given, client certificates
// signed by it are required (gearmand only serves its own certificate).
func TLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--ssl-certificate/--ssl-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ssl-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ssl-ca-file %s: no certificate in it", caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// tlsConn is a TLS client of the binary and admin protocols. gnet has no
// TLS, so these connections get a reader goroutine each and a writer
// goroutine each; they meet the engine exactly as gnet's connections do,
// through a session and its outbox.
type tlsConn struct {
	c      *tls.Conn
	sess   *engine.Session
	kick   chan struct{} // 1 slot: output is waiting
	done   chan struct{} // the reader is finishing
	exited chan struct{} // the writer has stopped
	buf    []byte        // writer-owned copy of the output
}

// flush wakes the writer; any goroutine may call it (see sink).
func (tc *tlsConn) flush() {
	select {
	case tc.kick <- struct{}{}:
	default:
	}
}

// writer copies the output out under the outbox lock and writes it
// outside, so a slow TLS reader never holds up the shards.
func (tc *tlsConn) writer() {
	defer close(tc.exited)
	for {
		select {
		case <-tc.kick:
		case <-tc.done:
			return
		}
		if !tc.writeAll() {
			tc.c.Close() // the reader sees it and finishes
			return
		}
	}
}

// writeAll writes what is pending; false when the connection must go.
func (tc *tlsConn) writeAll() bool {
	for {
		tc.buf = tc.buf[:0]
		_, over := tc.sess.WriteOutput(func(p []byte) int {
			tc.buf = append(tc.buf, p...)
			if len(p) > engine.BufferAllowance {
				// The copy is held until written: it counts against the
				// output limit and the buffer budget, as what gnet
				// holds does for its connections.
				tc.sess.HandOff(len(p))
			}
			return len(p)
		})
		if over {
			return false
		}
		if len(tc.buf) == 0 {
			return true
		}
		_, err := tc.c.Write(tc.buf)
		tc.sess.SetDownstream(0) // written (or failed): given back
		if err != nil {
			return false
		}
		if cap(tc.buf) > 1<<20 {
			tc.buf = nil
		}
	}
}

// ServeTLS serves the binary and admin protocols over TLS on l, in place
// of gnet (gearmand's --ssl makes its port TLS-only), until Stop.
func (s *Server) ServeTLS(l net.Listener, cfg *tls.Config) error {
	s.tlsMu.Lock()
	s.tlsListener = l
	s.tlsConns = make(map[*tls.Conn]struct{})
	s.tlsMu.Unlock()
	for _, a := range ListenerAddrs(l) {
		s.bound = append(s.bound, a.(*net.TCPAddr))
	}
	close(s.ready)
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	for {
		raw, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors or buffers (EMFILE, ENFILE, ENOBUFS):
			// wait for connections to close, as net/http does, instead
			// of giving up the port.
			if ne, ok := err.(net.Error); ok && ne.Temporary() { //nolint:staticcheck // the errors it reports are the ones meant
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !s.admit() {
			raw.Close()
			continue
		}
		c := tls.Server(raw, cfg)
		s.tlsMu.Lock()
		if s.tlsConns == nil { // stopping
			s.tlsMu.Unlock()
			c.Close()
			s.release()
			continue
		}
		s.tlsConns[c] = struct{}{}
		s.tlsMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveTLSConn(c)
			s.tlsMu.Lock()
			delete(s.tlsConns, c)
			s.tlsMu.Unlock()
			s.release()
		}()
	}
}

// stopTLS closes the TLS listener and every TLS connection.
func (s *Server) stopTLS() {
	s.tlsMu.Lock()
	defer s.tlsMu.Unlock()
	if s.tlsListener != nil {
		s.tlsListener.Close()
	}
	for c := range s.tlsConns {
		c.Close()
	}
	s.tlsConns = nil
}

func (s *Server) serveTLSConn(c *tls.Conn) {
	defer c.Close()
	if s.draining.Load() {
		return
	}
	if err := c.Handshake(); err != nil {
		s.log.Info().Err(err).Str("peer", c.RemoteAddr().String()).Msg("TLS handshake failed")
		return
	}
	ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	tc := &tlsConn{c: c, kick: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	tc.sess = s.eng.NewSession(-1, ip, tc)
	tc.sess.SetOutputLimit(s.opts.MaxOutput)
	s.log.Info().Str("peer", ip).Bool("tls", true).Uint64("conn", tc.sess.ID).Msg("connection opened")
	// The buffer budget evicts this connection, when it holds the most, by
	// waking the reader, which cuts it off.
	var evicted atomic.Bool
	evict := func() {
		evicted.Store(true)
		_ = c.SetReadDeadline(time.Now())
	}
	tc.sess.SetBufferBudget(s.budget, evict)
	var inAcct engine.BufferAccount // what in holds, against the buffer budget
	inAcct.Bind(s.budget, evict)
	defer inAcct.Set(0)
	go tc.writer()
	var t engine.Turn
	defer func() {
		// Stop the writer, send what is left (an ERROR before a close),
		// then leave the engine.
		close(tc.done)
		<-tc.exited
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		tc.writeAll()
		s.eng.Disconnect(&t, tc.sess)
		s.dispatch(&t)
		s.log.Info().Str("peer", ip).Bool("tls", true).Uint64("conn", tc.sess.ID).Msg("connection closed")
	}()
	in := make([]byte, 0, 64<<10)
	read := make([]byte, 64<<10)
	need := 0 // length of the packet still arriving, once its header is in
	cut := func() {
		s.cutInput(&t, tc.sess, &inAcct)
		s.dispatch(&t) // the deferred writeAll sends the ERROR before the close
		t.Reset()
	}
	for {
		n, err := c.Read(read)
		if evicted.Load() {
			s.logEvicted(tc.sess)
			if inAcct.Evicted() {
				cut()
			}
			return
		}
		in = append(in, read[:n]...)
		if err == nil && len(in) < need {
			// A large packet is still arriving: count it, don't decode it.
			if !inAcct.Set(len(in)) {
				cut()
				return
			}
			continue
		}
		inAcct.Set(0) // as for gnet's connections (OnTraffic): not counted twice while it runs
		r := s.handleInput(&t, tc.sess, in, math.MaxInt)
		for r.yield && !r.closeConn {
			// A connection of its own: nothing else waits for this
			// goroutine, so the rest runs at once.
			s.dispatch(&t)
			t.Reset()
			in = in[:copy(in, in[r.used:])]
			r = s.handleInput(&t, tc.sess, in, math.MaxInt)
		}
		need = r.need
		s.dispatch(&t)
		t.Reset()
		in = in[:copy(in, in[r.used:])]
		if r.closeConn || err != nil {
			return
		}
		if !inAcct.Set(len(in)) {
			cut()
			return
		}
		if len(in) == 0 && cap(in) > 1<<20 {
			in = make([]byte, 0, 64<<10) // a large packet must not pin its buffer for the connection's life
		}
	}
}
