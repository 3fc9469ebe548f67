package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/alecthomas/kong"
)

// defaultConfigFile is gearmand's, read only when it exists.
const defaultConfigFile = "/etc/gearmand.conf"

// withConfigFile puts the options of the server's config file (gearmand's
// --config-file: options separated by white space, and # comments) before the command
// line's, so that the command line wins. Other commands, and command lines
// that do not parse (run reports them), are left as they are. A flag given
// twice on the command line, or twice in the file, is refused (see
// repeatedFlag); one the command line repeats from the file is not.
func withConfigFile(args []string) ([]string, error) {
	var cli CLI
	parser, err := newParser(&cli, io.Discard, io.Discard, func(int) {})
	if err != nil {
		return nil, err
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		return args, nil
	}
	if err := repeatedFlag(ctx); err != nil {
		return nil, err
	}
	if ctx.Command() != "serve" {
		return args, nil
	}
	path := cli.Serve.ConfigFile
	text, err := os.ReadFile(path)
	if err != nil {
		// As gearmand: only its default file may be missing.
		if path == defaultConfigFile && errors.Is(err, fs.ErrNotExist) {
			return args, nil
		}
		return nil, fmt.Errorf("--config-file %s: %w", path, err)
	}
	options := joinNegativeValues(configWords(string(text)))
	if len(options) == 0 {
		return args, nil
	}
	// The file's options alone must parse, so that an error in it names it.
	fileCtx, _, _, err := parse(append([]string{"serve"}, options...), io.Discard, io.Discard)
	if err == nil {
		err = repeatedFlag(fileCtx)
	}
	if err != nil {
		return nil, usagef("--config-file %s: %v", path, err)
	}
	head, rest := args[:0], args
	if len(args) > 0 && args[0] == "serve" {
		head, rest = args[:1], args[1:]
	}
	return append(append(append([]string{}, head...), options...), rest...), nil
}

// repeatedFlag refuses a flag given more than once, as gearmand's and
// gearadmin's option parser does, rather than letting the last one win
// quietly: two -L or -p in a unit file are a mistake to report. Flags that
// collect values are exempt, and so are gearman's tools (client, worker),
// whose own parser keeps the last.
func repeatedFlag(ctx *kong.Context) error {
	if cmd := ctx.Command(); strings.HasPrefix(cmd, "client") || strings.HasPrefix(cmd, "worker") {
		return nil
	}
	seen := map[*kong.Flag]bool{}
	for _, p := range ctx.Path {
		f := p.Flag
		if f == nil || f.IsSlice() || f.IsMap() || f.IsCounter() {
			continue
		}
		if seen[f] {
			return usagef("option '--%s' cannot be specified more than once", f.Name)
		}
		seen[f] = true
	}
	return nil
}

// configWords splits a config file into words; a word that begins with #
// starts a comment to the end of its line (gearmand ignores such words, as
// it ignores every word that is not an option).
func configWords(text string) []string {
	var words []string
	for line := range strings.Lines(text) {
		for _, w := range strings.Fields(line) {
			if strings.HasPrefix(w, "#") {
				break
			}
			words = append(words, w)
		}
	}
	return words
}
