package netio

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// StubLookup makes -L's names resolve from names (each to its addresses,
// in order) until the test ends; other names do not resolve.
func StubLookup(t testing.TB, names map[string][]string) {
	prev := lookupIPAddr
	t.Cleanup(func() { lookupIPAddr = prev })
	lookupIPAddr = func(_ context.Context, host string) ([]net.IPAddr, error) {
		addrs, ok := names[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var ips []net.IPAddr
		for _, a := range addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return nil, fmt.Errorf("stub %s: %w", host, err)
			}
			ips = append(ips, net.IPAddr{IP: ip.AsSlice(), Zone: ip.Zone()})
		}
		return ips, nil
	}
}
