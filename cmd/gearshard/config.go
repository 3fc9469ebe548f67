package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// defaultConfigFile is gearmand's, read only when it exists.
const defaultConfigFile = "/etc/gearmand.conf"

// withConfigFile puts the options of the server's config file (gearmand's
// --config-file: options separated by white space, and # comments) before the command
// line's, so that the command line wins. Other commands, and command lines
// that do not parse (run reports them), are left as they are.
func withConfigFile(args []string) ([]string, error) {
	var cli CLI
	parser, err := newParser(&cli, io.Discard, io.Discard, func(int) {})
	if err != nil {
		return nil, err
	}
	if ctx, err := parser.Parse(args); err != nil || ctx.Command() != "serve" {
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
	if _, _, _, err := parse(append([]string{"serve"}, options...), io.Discard, io.Discard); err != nil {
		return nil, usagef("--config-file %s: %v", path, err)
	}
	head, rest := args[:0], args
	if len(args) > 0 && args[0] == "serve" {
		head, rest = args[:1], args[1:]
	}
	return append(append(append([]string{}, head...), options...), rest...), nil
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
