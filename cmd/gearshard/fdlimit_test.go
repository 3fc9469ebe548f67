package main

import (
	"bufio"
	"net"
	"sync"
	"testing"
	"time"

	"gearshard/netio/gstest"
)

// TestConnectionLimitFollowsDescriptorLimit floods a server started with
// -f 160 with connections far past its descriptor limit: the ones over its
// connection budget are closed at once, and the server (which used to shut
// down when gnet's accept met EMFILE) keeps serving the ones it holds and
// takes new ones as places free up.
func TestConnectionLimitFollowsDescriptorLimit(t *testing.T) {
	const fdLimit, backlog = 160, 16
	p := startProcess(t, "-f", "160", "-b", "16", "-t", "2")
	// The budget leaves room for the server's own descriptors and a full backlog.
	if p.maxConns <= 0 || p.maxConns > fdLimit-backlog-32 {
		t.Fatalf("max_connections = %d with -f %d -b %d", p.maxConns, fdLimit, backlog)
	}

	version := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("version\n")); err != nil {
			return err
		}
		_, err := bufio.NewReader(c).ReadString('\n')
		return err
	}
	held := make([]net.Conn, p.maxConns)
	for i := range held {
		c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, p.maxConns, err)
		}
		defer c.Close()
		if err := version(c); err != nil {
			t.Fatalf("connection %d of %d not served: %v", i+1, p.maxConns, err)
		}
		held[i] = c
	}

	// Twice the descriptor limit more, held open by the flooder, 20 dials
	// at a time: each is accepted and closed without a byte.
	const flood = 2 * fdLimit
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		extra  []net.Conn
		served int
		sem    = make(chan struct{}, 20)
	)
	for i := 0; i < flood; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				return // a full backlog may refuse: also not served
			}
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			_, _ = c.Write([]byte("version\n"))
			_, err = bufio.NewReader(c).ReadString('\n')
			mu.Lock()
			defer mu.Unlock()
			extra = append(extra, c)
			if err == nil {
				served++
			}
		}()
	}
	wg.Wait()
	if served > 0 {
		t.Errorf("%d connections over the budget of %d were served", served, p.maxConns)
	}
	for _, c := range extra {
		c.Close()
	}

	if gone, err := p.exited(); gone {
		t.Fatalf("gearshard exited during the flood: %v", err)
	}
	for i, c := range held {
		if err := version(c); err != nil {
			t.Fatalf("held connection %d lost after the flood: %v", i+1, err)
		}
	}
	// A place freed is a place for a newcomer.
	held[0].Close()
	gstest.Eventually(t, 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		return version(c) == nil
	}, "no new connection served after one closed")
}
