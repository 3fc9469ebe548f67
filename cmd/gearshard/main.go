// Command gearshard is a Gearman job server compatible with gearmand's
// protocol, admin commands and flags, sharded over every core.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

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
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// exitUsage is the exit code for a bad command line, as getopt tools use.
const exitUsage = 2

// run parses args and runs the selected command, returning the exit code.
func run(args []string, stdout, stderr io.Writer) (code int) {
	var cli CLI
	exited := false
	parser, err := kong.New(&cli,
		kong.Name("gearshard"),
		kong.Description("A Gearman job server: gearmand's protocol, admin commands and flags, on every core."),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { exited, code = true, c }),
		// -h is the host in the client tools, as in gearadmin and gearman;
		// help is --help.
		kong.PostBuild(func(k *kong.Kong) error {
			k.Model.HelpFlag.Short = 0
			return nil
		}),
	)
	if err != nil {
		fmt.Fprintln(stderr, "gearshard:", err)
		return 1
	}
	ctx, err := parser.Parse(args)
	if exited {
		return code // --help or -V printed and asked to exit
	}
	if err != nil {
		fmt.Fprintln(stderr, "gearshard:", err)
		return exitUsage
	}
	ctx.Bind(&stdio{Out: stdout, Err: stderr})
	if err := ctx.Run(); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "gearshard:", err)
			return exitUsage
		}
		fmt.Fprintln(stderr, "gearshard:", err)
		return 1
	}
	return 0
}

// usageError is a flag value the parser accepted but the command cannot
// use; it exits like a parse error.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }
