package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// A daemon's configuration file mirrors its flags one to one: each line is
// "key = value", the key a flag's name without the dashes and the value
// what the flag would take. Blank lines and lines starting with # are
// ignored; there are no inline comments, so a value may hold a #. A value
// in double quotes is a Go string literal (for leading or trailing spaces,
// or an explicit empty value). Keys of list flags (label, join, ...) may
// repeat, and add to the list as the repeated flag would; any other key
// may be given once. deploy/corral-server.conf and deploy/corral-agent.conf
// are complete examples.
//
// A flag given on the command line wins over the file, and so does a flag
// that rules the file's key out (--join over the file's bootstrap).

// configLine is one key = value line of a configuration file.
type configLine struct {
	n          int // line number, from 1
	key, value string
}

var configKey = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// parseConfig reads the lines of a configuration file. It reports every
// malformed line, not only the first.
func parseConfig(name string, r io.Reader) ([]configLine, error) {
	var lines []configLine
	var errs []error
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || !configKey.MatchString(key) {
			errs = append(errs, fmt.Errorf("%s:%d: %q is not key = value (a flag's name without the dashes, e.g. data-dir = /var/lib/corral)", name, n, text))
			continue
		}
		if strings.HasPrefix(value, `"`) {
			v, err := strconv.Unquote(value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: value %s of %s is not a closed double-quoted string", name, n, value, key))
				continue
			}
			value = v
		}
		lines = append(lines, configLine{n: n, key: key, value: value})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return lines, errors.Join(errs...)
}

// configFileFlag adds --config to a daemon command: before the command
// runs (and before cobra checks its required flags) the file's keys set
// the flags the command line left alone.
func (a *app) configFileFlag(cmd *cobra.Command) {
	var path string
	cmd.Flags().StringVar(&path, "config", "", "read flags from this file of key = value lines (a flag's name without the dashes); flags on the command line win")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if path == "" {
			return nil
		}
		if err := loadConfigFile(cmd.Flags(), path); err != nil {
			a.started = true // a mistake in the file, not on the command line: no usage text
			return err
		}
		return nil
	}
}

// loadConfigFile applies the configuration file at path to fs.
func loadConfigFile(fs *pflag.FlagSet, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("configuration file: %w", err)
	}
	defer f.Close()
	lines, err := parseConfig(path, f)
	if err != nil {
		return err
	}
	return applyConfig(fs, path, lines)
}

// notConfigKeys are flags that make no sense in a file.
var notConfigKeys = []string{"config", "help"}

// configKeys lists the keys a file for fs may hold, sorted.
func configKeys(fs *pflag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(notConfigKeys, f.Name) {
			keys = append(keys, f.Name)
		}
	})
	slices.Sort(keys)
	return keys
}

// isListFlag reports whether f may be given more than once.
func isListFlag(f *pflag.Flag) bool {
	t := f.Value.Type()
	return strings.HasSuffix(t, "Array") || strings.HasSuffix(t, "Slice")
}

// applyConfig sets the flags of fs that lines name and the command line
// did not set. A key it does not know sets nothing at all.
func applyConfig(fs *pflag.FlagSet, name string, lines []configLine) error {
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { onCommandLine[f.Name] = true })

	var errs []error
	first := map[string]int{}
	var set []configLine
	for _, l := range lines {
		f := fs.Lookup(l.key)
		if f == nil || slices.Contains(notConfigKeys, l.key) {
			errs = append(errs, fmt.Errorf("%s:%d: unknown key %q; the keys are the flags' names: %s", name, l.n, l.key, strings.Join(configKeys(fs), ", ")))
			continue
		}
		if prev, ok := first[l.key]; ok && !isListFlag(f) {
			errs = append(errs, fmt.Errorf("%s:%d: %s was already given on line %d; give it once", name, l.n, l.key, prev))
			continue
		}
		if _, ok := first[l.key]; !ok {
			first[l.key] = l.n
		}
		if onCommandLine[l.key] || excludedBy(fs, f, onCommandLine) {
			continue
		}
		set = append(set, l)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// A bad value stops the daemon before it starts, so applying the
	// good ones meanwhile does no harm; every bad one is reported.
	for _, l := range set {
		if err := fs.Set(l.key, l.value); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s = %s: %v", name, l.n, l.key, l.value, err))
		}
	}
	return errors.Join(errs...)
}

// excludedBy reports whether a flag on the command line is mutually
// exclusive with f, so that the command line's choice wins over the file's.
func excludedBy(fs *pflag.FlagSet, f *pflag.Flag, onCommandLine map[string]bool) bool {
	for _, group := range f.Annotations[cobraMutuallyExclusive] {
		for _, other := range strings.Fields(group) {
			if other != f.Name && onCommandLine[other] {
				return true
			}
		}
	}
	return false
}

// cobraMutuallyExclusive is the annotation cobra's
// MarkFlagsMutuallyExclusive puts on each flag of a group
// (TestConfigCommandLineExcludesFileKey pins it).
const cobraMutuallyExclusive = "cobra_annotation_mutually_exclusive"
