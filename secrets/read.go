package secrets

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// Limits of reads.
const (
	MaxReadMany      = 100  // paths in one GetMany
	DefaultListLimit = 1000 // keys in one page of List
	// maxListScan bounds the records one List call looks at when a filter
	// or skipped folders keep the page from filling: it then returns a
	// short page with a Next cursor.
	maxListScan = 10000
)

// Get returns version n of the secret at path (0: the current version).
func (s *Store) Get(ctx context.Context, mount, path string, n int) (*Secret, error) {
	if err := CheckPath(path); err != nil {
		return nil, err
	}
	m, _, err := s.readMount(ctx, mount)
	if err != nil {
		return nil, err
	}
	return s.get(ctx, m, path, n)
}

// get reads a secret of a mount just read. A version destroyed, pruned or
// deleted with its secret between the reads of the metadata and of the
// data is read again, to report what happened to it.
func (s *Store) get(ctx context.Context, m *mountRec, path string, n int) (*Secret, error) {
	for attempt := 0; ; attempt++ {
		rec, err := s.readRecordShared(ctx, m, path) // read only, below
		if err != nil {
			return nil, err
		}
		now := s.now()
		v, err := rec.readable(path, n, now)
		if err != nil {
			return nil, err
		}
		data, err := s.readData(ctx, m, path, rec, v)
		if errors.Is(err, errDataGone) && attempt < 2 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &Secret{Path: path, Data: data, VersionInfo: v.info(now), CustomMetadata: maps.Clone(rec.Custom)}, nil
	}
}

// staleRead is the read option raftstore.Stale(), made once: a variadic
// argument list of its own would be allocated by every call.
var staleRead = []raftstore.ReadOption{raftstore.Stale()}

// errDataGone: a version's metadata was read, its data is not there.
var errDataGone = fmt.Errorf("%w: version data missing", kms.ErrCorrupt)

// readData reads and decrypts version v's data.
func (s *Store) readData(ctx context.Context, m *mountRec, path string, rec *record, v *versionRec) ([]byte, error) {
	sealed, err := s.st.Get(ctx, tableData, dataKey(m.ID, rec.ID, v.Version), staleRead...)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q version %d", errDataGone, path, v.Version)
	}
	if err != nil {
		return nil, err
	}
	return s.open(ctx, m, path, rec, v, sealed)
}

// Result is the answer for one path of GetMany: a secret or an error.
type Result struct {
	Path   string
	Secret *Secret
	Err    error
}

// GetMany reads the current version of up to MaxReadMany secrets of one
// mount, in order, each with its own result or error.
func (s *Store) GetMany(ctx context.Context, mount string, paths []string) ([]Result, error) {
	if len(paths) == 0 || len(paths) > MaxReadMany {
		return nil, fmt.Errorf("%w: give 1 to %d paths", ErrInvalid, MaxReadMany)
	}
	m, _, err := s.readMount(ctx, mount)
	if err != nil {
		return nil, err
	}
	out := make([]Result, len(paths))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, p := range paths {
		out[i].Path = p
		if out[i].Err = CheckPath(p); out[i].Err != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i].Secret, out[i].Err = s.get(ctx, m, p, 0)
		})
	}
	wg.Wait()
	return out, nil
}

// ReadMetadata returns everything about a secret but its data.
func (s *Store) ReadMetadata(ctx context.Context, mount, path string) (*Metadata, error) {
	if err := CheckPath(path); err != nil {
		return nil, err
	}
	m, _, err := s.readMount(ctx, mount)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.readRecord(ctx, m, path)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, path)
	}
	return rec.metadata(path, s.now()), nil
}

// ListOptions select a page of a listing.
type ListOptions struct {
	// Recursive lists every secret below the folder; otherwise only its
	// direct children, with sub-folders as names ending in "/" (Vault's way).
	Recursive bool
	// After continues a listing after this name (a Next from an earlier page).
	After string
	// Limit caps the names in the page: 0 means DefaultListLimit, which is
	// also the most.
	Limit int
	// Filter keeps only secrets whose custom metadata holds every pair.
	// Folders are not listed when filtering.
	Filter map[string]string
}

// ListPage is one page of names relative to the folder listed, in byte
// order. Next, when not empty, is the After of the next page; a page may
// hold fewer than Limit names and still have a Next.
type ListPage struct {
	Keys []string
	Next string
}

// List lists the secrets below folder ("" for the whole mount). A secret
// with no version left, but metadata, is listed.
func (s *Store) List(ctx context.Context, mount, folder string, o ListOptions) (ListPage, error) {
	folder, err := checkFolder(folder)
	if err != nil {
		return ListPage{}, err
	}
	if err := checkCursor(o.After); err != nil {
		return ListPage{}, err
	}
	if o.Limit < 0 || o.Limit > DefaultListLimit {
		return ListPage{}, fmt.Errorf("%w: limit must be 0 to %d", ErrInvalid, DefaultListLimit)
	}
	if o.Limit == 0 {
		o.Limit = DefaultListLimit
	}
	m, _, err := s.readMount(ctx, mount)
	if err != nil {
		return ListPage{}, err
	}
	l := lister{base: m.ID + "/" + folder, o: o, pageSize: DefaultListLimit, maxScan: maxListScan}
	if o.Filter != nil {
		l.pageSize = 100 // records with their values
	}
	if s.listPageSize > 0 { // tests
		l.pageSize, l.maxScan = s.listPageSize, 3*s.listPageSize
	}
	return l.run(ctx, s.st)
}

func checkCursor(after string) error {
	switch {
	case len(after) > MaxPathLength+1, !utf8.ValidString(after), strings.IndexFunc(after, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: after is not a name from a listing", ErrInvalid)
	}
	return nil
}

// lister walks the metadata table below base. One-level listings skip
// each folder's subtree: within a page by name, across pages by seeking
// past it ("\xff" sorts after every byte of UTF-8).
type lister struct {
	base     string
	o        ListOptions
	pageSize int // records per raftstore page
	maxScan  int
	page     ListPage
	last     string // the last name emitted or skipped
}

func (l *lister) run(ctx context.Context, st kms.Storage) (ListPage, error) {
	cursor := l.after(l.o.After)
	scanned := 0
	for {
		ro := raftstore.ListOptions{Prefix: []byte(l.base), After: cursor, KeysOnly: l.o.Filter == nil, Limit: l.pageSize}
		page, err := st.List(ctx, tableMeta, ro, staleRead...)
		if err != nil {
			return ListPage{}, err
		}
		for _, kv := range page.Items {
			if full, err := l.visit(kv); full || err != nil {
				return l.page, err
			}
			scanned++
		}
		if page.Next == nil {
			return l.page, nil
		}
		if scanned >= l.maxScan {
			l.page.Next = l.last
			return l.page, nil
		}
		cursor = l.after(l.last)
	}
}

// after turns a name into the raftstore cursor that follows it.
func (l *lister) after(name string) []byte {
	if name == "" {
		return nil
	}
	if strings.HasSuffix(name, "/") {
		return []byte(l.base + name + "\xff")
	}
	return []byte(l.base + name)
}

// visit handles one record and reports whether the page is full.
func (l *lister) visit(kv raftstore.KV) (bool, error) {
	name := string(kv.Key[len(l.base):])
	if !l.o.Recursive {
		if i := strings.IndexByte(name, '/'); i >= 0 {
			name = name[:i+1]
			if name == l.last {
				return false, nil
			}
		}
	}
	if len(l.page.Keys) == l.o.Limit {
		l.page.Next = l.last
		return true, nil
	}
	l.last = name
	if l.o.Filter != nil {
		if strings.HasSuffix(name, "/") {
			return false, nil
		}
		var rec record
		if err := jsonUnmarshal(kv.Value, &rec); err != nil {
			return false, fmt.Errorf("secrets: metadata of %q does not decode: %w", name, err)
		}
		for k, v := range l.o.Filter {
			if got, ok := rec.Custom[k]; !ok || got != v {
				return false, nil
			}
		}
	}
	l.page.Keys = append(l.page.Keys, name)
	return false, nil
}
