package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/wire"
)

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files.
type pki struct {
	dir                    string
	caFile, certFile, keyF string
	clientCert, clientKey  string
	pool                   *x509.CertPool
	client                 tls.Certificate
	stranger               tls.Certificate // signed by another CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{dir: dir}
	caKey, caCert, caDER := makeCA(t, "gearshard test CA")
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(caCert)
	leaf := func(name string, signer *ecdsa.PrivateKey, ca *x509.Certificate, server bool) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, signer)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return der, kder
	}
	sder, skey := leaf("server", caKey, caCert, true)
	p.certFile, p.keyF = write("server.pem", "CERTIFICATE", sder), write("server.key", "EC PRIVATE KEY", skey)
	cder, ckey := leaf("client", caKey, caCert, false)
	p.clientCert, p.clientKey = write("client.pem", "CERTIFICATE", cder), write("client.key", "EC PRIVATE KEY", ckey)
	var err error
	if p.client, err = tls.LoadX509KeyPair(p.clientCert, p.clientKey); err != nil {
		t.Fatal(err)
	}
	otherKey, otherCA, _ := makeCA(t, "someone else")
	oder, okey := leaf("stranger", otherKey, otherCA, false)
	p.stranger, err = tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: oder}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: okey}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func makeCA(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert, der
}

// tlsDial connects with the given client certificate (none when nil).
func tlsDial(t *testing.T, addr string, p *pki, cert *tls.Certificate) (*tls.Conn, error) {
	cfg := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, c.Handshake()
}

// TestTLS: with --ssl the port speaks TLS only; with a CA, clients must
// show a certificate it signed; jobs and admin commands work over TLS.
func TestTLS(t *testing.T) {
	p := newPKI(t)
	ts := startServer(t, func(c *ServeCmd) {
		c.SSL, c.SSLCertificate, c.SSLKey, c.SSLCAFile = true, p.certFile, p.keyF, p.caFile
	})
	// A worker and a client over TLS run a job.
	w, err := tlsDial(t, ts.addr, p, &p.client)
	if err != nil {
		t.Fatalf("worker handshake: %v", err)
	}
	cl, err := tlsDial(t, ts.addr, p, &p.client)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	send := func(c *tls.Conn, typ wire.Type, args ...string) {
		var b [][]byte
		for _, a := range args {
			b = append(b, []byte(a))
		}
		if _, err := c.Write(wire.AppendRequest(nil, typ, b...)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(c *tls.Conn) wire.Packet {
		var buf []byte
		tmp := make([]byte, 4096)
		for {
			if p, n, err := wire.Decode(buf, 1<<20); err != nil {
				t.Fatal(err)
			} else if n > 0 {
				return p
			}
			n, err := c.Read(tmp)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			buf = append(buf, tmp[:n]...)
		}
	}
	send(w, wire.CanDo, "secure")
	send(cl, wire.SubmitJob, "secure", "", "secret")
	created := read(cl)
	if created.Type != wire.JobCreated {
		t.Fatalf("got %s", created.String())
	}
	h := string(created.Field[0])
	send(w, wire.GrabJob)
	if a := read(w); a.Type != wire.JobAssign || string(a.Field[2]) != "secret" {
		t.Fatalf("worker got %s", a.String())
	}
	send(w, wire.WorkComplete, h, "done")
	if r := read(cl); r.Type != wire.WorkComplete || string(r.Field[1]) != "done" {
		t.Fatalf("client got %s", r.String())
	}

	// No client certificate, or one from another CA: refused.
	for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "foreign CA": &p.stranger} {
		c, err := tlsDial(t, ts.addr, p, cert)
		if err == nil {
			// TLS 1.3 reports the refusal on the first read.
			_, err = c.Write([]byte("version\n"))
			if err == nil {
				_, err = bufio.NewReader(c).ReadString('\n')
			}
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Plain text on the TLS port gets nothing but a close.
	raw, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = raw.Write([]byte("version\r\n"))
	if line, err := bufio.NewReader(raw).ReadString('\n'); err == nil && strings.HasPrefix(line, "OK") {
		t.Fatalf("plain text answered on the TLS port: %q", line)
	}

	// openssl s_client, a TLS client that is not Go's.
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: install the Debian package openssl (make deps)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", ts.addr, "-CAfile", p.caFile,
		"-cert", p.clientCert, "-key", p.clientKey, "-verify_return_error", "-quiet")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// -quiet keeps s_client up after its input ends: it is stopped once
	// the reply is in.
	defer func() { cancel(); stdin.Close(); _ = cmd.Wait() }()
	if _, err := stdin.Write([]byte("version\n")); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "OK "+Version {
			return
		}
	}
	t.Fatalf("openssl s_client: no version reply (%v)", sc.Err())
}

// TestTLSListenIPv6: -L with an IPv6 address serves TLS there (the TLS
// listener once joined host and port without brackets and failed to start).
func TestTLSListenIPv6(t *testing.T) {
	p := newPKI(t)
	ts := startServer(t, func(c *ServeCmd) {
		c.Listen = "::1"
		c.SSL, c.SSLCertificate, c.SSLKey, c.SSLCAFile = true, p.certFile, p.keyF, p.caFile
	})
	if ts.host != "::1" {
		t.Fatalf("bound %s, want ::1", ts.addr)
	}
	c, err := tlsDial(t, ts.addr, p, &p.client)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if _, err := c.Write([]byte("version\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "OK "+Version+"\n" {
		t.Fatalf("version over TLS on ::1: %q, %v", line, err)
	}
}

// TestToolsOverTLS: admin, client and worker take -S as gearadmin and
// gearman do, verify the server's certificate, and show a client
// certificate given by flags or by libgearman's environment variables.
func TestToolsOverTLS(t *testing.T) {
	p := newPKI(t)
	e := newGMEnvServing(t, func(c *ServeCmd) {
		c.SSL, c.SSLCertificate, c.SSLKey, c.SSLCAFile = true, p.certFile, p.keyF, p.caFile
	})
	withTLS := func(args ...string) []string {
		return append([]string{"-S", "--ssl-ca-file", p.caFile, "--ssl-certificate", p.clientCert, "--ssl-key", p.clientKey}, args...)
	}
	w := e.start("worker", withTLS("-f", "reverse", "-c", "1", "--", "rev")...)
	e.client(t, withTLS("-f", "reverse", "hello")...).expect(t, 0, "olleh", "")
	w.expect(t, 0, "", "")
	e.start("admin", withTLS("--status")...).expect(t, 0, "reverse\t0\t0\t0\n.\n", "")

	// The files from the environment, as libgearman reads them.
	t.Setenv("GEARMAND_CA_CERTIFICATE", p.caFile)
	t.Setenv("GEARMAN_CLIENT_PEM", p.clientCert)
	t.Setenv("GEARMAN_CLIENT_KEY", p.clientKey)
	e.start("admin", "-S", "--getpid").expect(t, 0, strconv.Itoa(os.Getpid())+"\n", "")

	_, _, otherCA := makeCA(t, "not the server's CA")
	otherCAFile := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherCA}), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := newGMEnv(t)
	for _, tc := range []struct {
		name   string
		run    *goRun
		code   int
		stderr string
	}{
		{"server certificate from another CA", e.start("admin", "-S", "--ssl-ca-file", otherCAFile, "--getpid"), 1, "certificate signed by unknown authority"},
		{"no client certificate", e.start("admin", "-S", "--ssl-certificate", "", "--ssl-key", "", "--getpid"), 1, "certificate required"},
		{"plaintext to the TLS port", e.start("admin", "--getpid"), 1, "getpid: "},
		{"TLS to a plaintext port", plain.start("admin", "-S", "--getpid"), 1, "first record does not look like a TLS handshake"},
		{"certificate without its key", e.start("client", "-S", "--ssl-key", "", "-f", "reverse", "x"), 2, "--ssl-certificate and --ssl-key go together"},
		{"no CA certificate in the file", e.start("worker", "-S", "--ssl-ca-file", p.clientKey, "-f", "reverse"), 2, "no PEM certificate"},
	} {
		if code := tc.run.wait(t); code != tc.code || !strings.Contains(tc.run.stderr.String(), tc.stderr) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", tc.name, code, tc.run.stderr.String(), tc.code, tc.stderr)
		}
	}
}
