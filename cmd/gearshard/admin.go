package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// AdminCmd is gearadmin: the same flags, the same output, so that scripts
// need no other tool.
type AdminCmd struct {
	Host           string        `short:"h" default:"localhost" help:"Server host."`
	Port           int           `short:"p" default:"4730" help:"Server port."`
	ServerVersion  bool          `help:"Fetch the version number for the server."`
	ServerVerbose  bool          `help:"Fetch the verbose setting for the server."`
	CreateFunction string        `help:"Create the function from the server." placeholder:"FUNC"`
	CancelJob      string        `help:"Remove a given job from the server's queue." placeholder:"HANDLE"`
	DropFunction   string        `help:"Drop the function from the server." placeholder:"FUNC"`
	ShowUniqueJobs bool          `help:"Show unique IDs of jobs on the server."`
	ShowJobs       bool          `help:"Show all jobs on the server."`
	Getpid         bool          `help:"Get process identifier for the server."`
	Status         bool          `help:"Status for the server."`
	PriorityStatus bool          `help:"Queued jobs status by priority."`
	Workers        bool          `help:"Workers for the server."`
	Shutdown       bool          `help:"Shutdown server (from loopback only)."`
	Timeout        time.Duration `default:"10s" help:"Give up on the server after this long."`
	TLS            toolTLS       `embed:""`
}

// commands lists the admin lines to send, in the order gearadmin runs
// them (it stacks its flags and pops them: getpid first, status last);
// shutdown, which gearadmin lost in 1.1.15, comes after everything.
func (c *AdminCmd) commands() []string {
	var cmds []string
	add := func(on bool, line string) {
		if on {
			cmds = append(cmds, line)
		}
	}
	add(c.Getpid, "getpid")
	add(c.CreateFunction != "", "create function "+c.CreateFunction)
	add(c.DropFunction != "", "drop function "+c.DropFunction)
	add(c.ShowJobs, "show jobs")
	add(c.ShowUniqueJobs, "show unique jobs")
	add(c.CancelJob != "", "cancel job "+c.CancelJob)
	add(c.ServerVerbose, "verbose")
	add(c.ServerVersion, "version")
	add(c.Workers, "workers")
	add(c.PriorityStatus, "prioritystatus")
	add(c.Status, "status")
	add(c.Shutdown, "shutdown")
	return cmds
}

// Run sends each requested command and prints each reply as gearadmin
// does: "OK" alone for a bare OK, the value of "OK value", "Error: ..." on
// stderr for ERR, listings as they come.
func (c *AdminCmd) Run(std *stdio) error {
	cmds := c.commands()
	if len(cmds) == 0 {
		return usagef("admin: give at least one action (--status, --workers, ...); see --help")
	}
	tlsCfg, err := c.TLS.config()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	conn, err := dialServer(addr, c.Timeout, tlsCfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for _, cmd := range cmds {
		_ = conn.SetDeadline(time.Now().Add(c.Timeout))
		if _, err := io.WriteString(conn, cmd+"\r\n"); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		reply, err := readAdminReply(r, listing(cmd))
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		printAdminReply(std, reply)
	}
	return nil
}

// listing reports whether a command's reply is a list ending in ".".
func listing(cmd string) bool {
	switch cmd {
	case "status", "prioritystatus", "workers", "show jobs", "show unique jobs":
		return true
	}
	return false
}

// readAdminReply reads a listing up to its "." line, or one line. An
// "ERR" line ends a listing too.
func readAdminReply(r *bufio.Reader, isListing bool) (string, error) {
	var out strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return out.String(), err
		}
		out.WriteString(line)
		if !isListing || line == ".\n" || (out.Len() == len(line) && strings.HasPrefix(line, "ERR")) {
			return out.String(), nil
		}
	}
}

func printAdminReply(std *stdio, reply string) {
	switch {
	case reply == "OK\r\n" || reply == "OK\n":
		fmt.Fprintln(std.Out, "OK")
	case strings.HasPrefix(reply, "OK "):
		fmt.Fprint(std.Out, strings.TrimPrefix(reply, "OK "))
	case strings.HasPrefix(reply, "ERR "):
		// gearadmin prints errors on stderr (keeping the CR) and exits 0.
		fmt.Fprintf(std.Err, "Error: %s\n", strings.TrimSuffix(strings.TrimPrefix(reply, "ERR "), "\n"))
	default:
		fmt.Fprint(std.Out, reply)
	}
}
