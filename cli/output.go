package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
)

// printer writes a command's result: the API value as indented JSON with
// -o json, or a human rendering of it. Every command prints through it.
type printer struct {
	w      io.Writer
	format string
}

func (p *printer) json() bool { return p.format == formatJSON }

// print writes v as JSON, or calls human to render it for people.
func (p *printer) print(v any, human func(t *table)) error {
	if p.json() {
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	t := newTable(p.w)
	human(t)
	return t.flush()
}

// line writes one line for people; with -o json it writes v instead (nil:
// nothing).
func (p *printer) line(v any, format string, args ...any) error {
	if p.json() {
		if v == nil {
			return nil
		}
		return p.print(v, nil)
	}
	_, err := fmt.Fprintf(p.w, format+"\n", args...)
	return err
}

// table renders key-value pairs and column tables aligned.
type table struct {
	tw  *tabwriter.Writer
	err error
}

func newTable(w io.Writer) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

func (t *table) printf(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.tw, format, args...)
	}
}

// kv writes "key  value"; a list value is joined with commas.
func (t *table) kv(key string, value any) {
	t.printf("%s\t%s\n", key, cell(value))
}

// row writes one row of a column table.
func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = cell(c)
	}
	t.printf("%s\n", strings.Join(s, "\t"))
}

// text writes a line outside the columns' alignment.
func (t *table) text(format string, args ...any) {
	t.printf(format+"\n", args...)
}

func (t *table) flush() error {
	if err := t.tw.Flush(); t.err == nil {
		t.err = err
	}
	return t.err
}

// cell renders one value for a person: times in UTC RFC 3339, zero times
// and empty lists as "-".
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case []string:
		if len(x) == 0 {
			return "-"
		}
		return strings.Join(x, ",")
	case time.Time:
		if x.IsZero() {
			return "-"
		}
		return x.UTC().Format(time.RFC3339)
	case time.Duration:
		if x == 0 {
			return "-"
		}
		return x.String()
	}
	return fmt.Sprint(v)
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError ends the command with a code and no message: the command has
// already said what happened (a signature that does not verify).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// renderError writes err for a person and returns the exit code. API
// errors print as "Error: message (code c, request r)".
func renderError(w io.Writer, err error, commandPath string) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(w, "Error: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		if commandPath != "" {
			fmt.Fprintf(w, "Run '%s --help' for usage.\n", commandPath)
		}
		return exitUsage
	}
	return exitFailure
}
