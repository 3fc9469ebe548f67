package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"
)

// toolTLS is the TLS of the tools that connect to a server (admin, client,
// worker): -S as in gearadmin and gearman, with the certificate files read
// from the environment variables libgearman reads.
type toolTLS struct {
	SSL            bool   `short:"S" name:"ssl" help:"Connect with TLS; the server's certificate is verified against --ssl-ca-file, else the system's roots."`
	SSLCAFile      string `name:"ssl-ca-file" env:"GEARMAND_CA_CERTIFICATE" placeholder:"FILE" help:"CA certificates to verify the server's certificate with (PEM)."`
	SSLCertificate string `name:"ssl-certificate" env:"GEARMAN_CLIENT_PEM" placeholder:"FILE" help:"Client certificate (PEM), for a server that asks for one."`
	SSLKey         string `name:"ssl-key" env:"GEARMAN_CLIENT_KEY" placeholder:"FILE" help:"Key of --ssl-certificate (PEM)."`
}

// config is the TLS client configuration, nil without -S. The files are
// read here, once, so that a bad one stops the tool before it connects.
func (f *toolTLS) config() (*tls.Config, error) {
	if !f.SSL {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.SSLCAFile != "" {
		pem, err := os.ReadFile(f.SSLCAFile)
		if err != nil {
			return nil, usagef("--ssl-ca-file: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usagef("--ssl-ca-file %s: no PEM certificate in it", f.SSLCAFile)
		}
	}
	switch {
	case f.SSLCertificate != "" && f.SSLKey != "":
		cert, err := tls.LoadX509KeyPair(f.SSLCertificate, f.SSLKey)
		if err != nil {
			return nil, usagef("--ssl-certificate/--ssl-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case f.SSLCertificate != "" || f.SSLKey != "":
		return nil, usagef("--ssl-certificate and --ssl-key go together")
	}
	return cfg, nil
}

// dialServer connects to addr, over TLS when cfg is set; the timeout (none
// when zero) bounds the handshake too, and tls.Dialer verifies the host
// name of addr.
func dialServer(addr string, timeout time.Duration, cfg *tls.Config) (net.Conn, error) {
	d := &net.Dialer{Timeout: max(timeout, 0)}
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = (&tls.Dialer{NetDialer: d, Config: cfg}).Dial("tcp", addr)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("could not connect to %s: %w", addr, err)
	}
	return c, nil
}
