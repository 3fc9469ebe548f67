// Command gearshard is a Gearman job server compatible with gearmand's
// protocol, admin commands and flags, sharded over every core.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
)

// Version is reported by -V and the "version" admin command. It keeps
// gearmand's leading "1.1.20" so that clients which compare server versions
// (CAN_DO_TIMEOUT units changed in 1.1.19) treat gearshard as current.
const Version = "1.1.20+gearshard.0.1.0"

// CLI is the whole command line: the server (default) and its tools.
type CLI struct {
	Serve  ServeCmd  `cmd:"" default:"withargs" help:"Run the job server (the default command)."`
	Admin  AdminCmd  `cmd:"" help:"Query or control a server, as gearadmin does (same flags)."`
	Bench  BenchCmd  `cmd:"" help:"Load-test a Gearman server (any), or compare two."`
	Client ClientCmd `cmd:"" help:"Submit jobs and print their results, as gearman does (same flags)."`
	Worker WorkerCmd `cmd:"" help:"Run a command for each job, as gearman -w does (same flags)."`
}

// stdio is where commands print; bound by run so tests can capture it.
type stdio struct {
	Out, Err io.Writer
	// Stop, when closed, ends a tool that would otherwise run on (a
	// reconnecting worker). Nil in a process, which a signal ends.
	Stop <-chan struct{}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args and runs the selected command, returning the exit code.
func run(given []string, stdout, stderr io.Writer) int {
	return runWith(given, stdio{Out: stdout, Err: stderr})
}

// exitUsage is the exit code for a bad command line, as getopt tools use.
const exitUsage = 2

// runWith is run with a Stop channel.
func runWith(given []string, std stdio) int {
	stdout, stderr := std.Out, std.Err
	given = joinNegativeValues(given)
	args, err := withConfigFile(given)
	if err != nil {
		return report(stderr, err)
	}
	ctx, exited, code, err := parse(args, stdout, stderr)
	if exited {
		return code // --help or -V printed and asked to exit
	}
	if err != nil {
		fmt.Fprintln(stderr, "gearshard:", err)
		return exitUsage
	}
	ctx.Bind(&std)
	ctx.Bind(invocation(given))
	if err := ctx.Run(); err != nil {
		return report(stderr, err)
	}
	return 0
}

// joinNegativeValues joins a negative number to a flag before it that
// takes a value (-j -1 → -j-1, --job-retries -1 → --job-retries=-1), so
// that it reads as the flag's value, as gearmand's parser reads it, rather
// than as a flag. No flag is a digit, so such a word is never a flag of
// its own.
func joinNegativeValues(args []string) []string {
	var cli CLI
	parser, err := newParser(&cli, io.Discard, io.Discard, func(int) {})
	if err != nil {
		return args
	}
	takesValue := map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if f.IsBool() || f.IsCounter() {
				continue
			}
			takesValue["--"+f.Name] = true
			for _, a := range f.Aliases {
				takesValue["--"+a] = true
			}
			if f.Short != 0 {
				takesValue["-"+string(f.Short)] = true
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(parser.Model.Node)
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if i+1 < len(args) && takesValue[a] && isNegativeNumber(args[i+1]) {
			if strings.HasPrefix(a, "--") {
				a += "="
			}
			out = append(out, a+args[i+1])
			i++
			continue
		}
		out = append(out, a)
	}
	return out
}

func isNegativeNumber(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// report prints a command's error and returns its exit code.
func report(stderr io.Writer, err error) int {
	var status exitStatus
	if errors.As(err, &status) {
		return int(status) // reported already, by a daemon's child
	}
	fmt.Fprintln(stderr, "gearshard:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return 1
}

// parse parses a command line; exited reports that --help or -V printed
// and asked to exit with code.
func parse(args []string, stdout, stderr io.Writer) (ctx *kong.Context, exited bool, code int, err error) {
	var cli CLI
	parser, err := newParser(&cli, stdout, stderr, func(c int) { exited, code = true, c })
	if err != nil {
		return nil, false, 0, err
	}
	ctx, err = parser.Parse(args)
	return ctx, exited, code, err
}

// newParser is gearshard's command-line parser, filling cli; exit is
// called where a parser would exit (after --help or -V).
func newParser(cli *CLI, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(cli,
		kong.Name("gearshard"),
		kong.Description("A Gearman job server: gearmand's protocol, admin commands and flags, on every core."),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.Vars{"default_config_file": defaultConfigFile},
		// -h is the host in the client tools, as in gearadmin and gearman;
		// help is --help (and the server's own -h, as gearmand's).
		kong.PostBuild(func(k *kong.Kong) error {
			k.Model.HelpFlag.Short = 0
			return nil
		}),
	)
}

// invocation is the command line run was given, for a daemon to start its
// child with (which reads the config file itself).
type invocation []string

// exitStatus ends run with this code and no message of its own.
type exitStatus int

func (e exitStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// usageError is a flag value the parser accepted but the command cannot
// use; it exits like a parse error.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }
