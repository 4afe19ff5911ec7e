package cli

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/custos-pki/custos/api"
	"golang.org/x/term"
)

// maxInputBytes caps data read from a file or stdin for one request: the
// server refuses bodies over its limit anyway.
const maxInputBytes = api.DefaultMaxBodyBytes

// secretReader reads secrets (unseal shares) one at a time: from the
// terminal without echo, or one line at a time from a pipe.
type secretReader struct {
	in     io.Reader
	prompt io.Writer
	lines  *bufio.Reader // for input that is not a terminal
}

func newSecretReader(in io.Reader, prompt io.Writer) *secretReader {
	return &secretReader{in: in, prompt: prompt}
}

// terminalFD returns the file descriptor of in when it is a terminal.
func terminalFD(in io.Reader) (int, bool) {
	f, ok := in.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// read returns the next secret, trimmed. At the end of piped input it
// returns io.EOF.
func (s *secretReader) read(prompt string) (string, error) {
	if fd, ok := terminalFD(s.in); ok {
		fmt.Fprintf(s.prompt, "%s (will be hidden): ", prompt)
		b, err := readHidden(fd, s.prompt)
		fmt.Fprintln(s.prompt)
		v := strings.TrimSpace(string(b))
		switch {
		case errors.Is(err, io.EOF), err == nil && v == "":
			return "", io.EOF // an empty line or ^D: the operator is done
		case err != nil:
			return "", fmt.Errorf("read %s: %w", strings.ToLower(prompt), err)
		}
		return v, nil
	}
	if s.lines == nil {
		s.lines = bufio.NewReaderSize(io.LimitReader(s.in, maxInputBytes), 4096)
	}
	for {
		line, err := s.lines.ReadString('\n')
		if v := strings.TrimSpace(line); v != "" {
			return v, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", io.EOF
			}
			return "", fmt.Errorf("read %s: %w", strings.ToLower(prompt), err)
		}
	}
}

// readHidden reads a line from the terminal fd without echo. An interrupt
// while it waits puts the terminal back as it was before the process
// ends, so the shell is not left without echo.
func readHidden(fd int, w io.Writer) ([]byte, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return nil, err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	defer func() {
		signal.Stop(sigs)
		close(done)
	}()
	go func() {
		select {
		case <-sigs:
			_ = term.Restore(fd, state)
			fmt.Fprintln(w)
			os.Exit(130)
		case <-done:
		}
	}()
	return term.ReadPassword(fd)
}

// dataSource is where a command's input comes from: its argument, the
// file of --file, or stdin when the argument is "-".
type dataSource struct {
	file     string
	encoding string // raw, base64 or hex
}

// input encodings.
const (
	encRaw    = "raw"
	encBase64 = "base64"
	encHex    = "hex"
)

// read returns the input bytes. args are the command's positional
// arguments after the key name; at most one.
func (d *dataSource) read(in io.Reader, args []string, what string) ([]byte, error) {
	var (
		raw []byte
		err error
	)
	switch {
	case d.file != "" && len(args) > 0:
		return nil, usagef("give the %s as an argument or with --file, not both", what)
	case d.file != "":
		raw, err = readFileLimited(d.file)
	case len(args) == 1 && args[0] == "-":
		raw, err = readLimited(in, maxInputBytes)
		if err != nil {
			err = fmt.Errorf("read stdin: %w", err)
		}
	case len(args) == 1:
		raw = []byte(args[0])
	default:
		return nil, usagef("give the %s as an argument, with --file, or as - to read stdin", what)
	}
	if err != nil {
		return nil, err
	}
	return decodeInput(raw, d.encoding, what)
}

// text reads input that is text (a ciphertext): surrounding white space
// is dropped.
func (d *dataSource) text(in io.Reader, args []string, what string) (string, error) {
	b, err := d.read(in, args, what)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("the %s is empty", what)
	}
	return s, nil
}

func decodeInput(raw []byte, encoding, what string) ([]byte, error) {
	switch encoding {
	case "", encRaw:
		return raw, nil
	case encBase64:
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			return nil, fmt.Errorf("the %s is not base64: %w", what, err)
		}
		return b, nil
	case encHex:
		b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			return nil, fmt.Errorf("the %s is not hex: %w", what, err)
		}
		return b, nil
	}
	return nil, usagef("--input-encoding %q: use raw, base64 or hex", encoding)
}

func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := readLimited(f, maxInputBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
