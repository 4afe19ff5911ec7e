package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// Config configures one node. Start from DefaultConfig.
type Config struct {
	// NodeID is this node's Raft server ID; its cluster certificate names it.
	NodeID string
	// DataDir holds the log (raft.db), the state (state.db) and snapshots.
	DataDir string
	// BindAddr is the cluster port's listen address. Ignored when Listener is set.
	BindAddr string
	// AdvertiseAddr is the address peers dial; defaults to the listener's.
	AdvertiseAddr string
	// Listener, when set, is used instead of listening on BindAddr.
	Listener net.Listener
	// TLS is the node certificate and the cluster CA.
	TLS TLSMaterial
	// Dial opens plain TCP connections to peers; nil uses net.Dialer.
	Dial DialFunc

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	MaxAppendEntries   int
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	// ApplyTimeout bounds a write when the caller's context has no deadline.
	ApplyTimeout time.Duration

	// OrderedTables names the tables whose keys mostly grow with time
	// (time-ordered IDs and serials, expiry indexes): their pages are
	// filled rather than split in halves (fill.go).
	OrderedTables []string

	// OnRestore, when set, is called after a snapshot replaced this node's
	// state while it runs: a restored backup, or the leader's state sent to
	// a follower that fell behind. It runs on the state machine's goroutine:
	// it must return at once and not call the store.
	OnRestore func()

	// Admit, when set, decides on the leader whether the non-voter id may
	// become a voter, given the proof it sent with Promote (the node layer
	// checks that it holds the barrier keys). With Admit set, AddVoter only
	// keeps voters; new voters come only through Promote.
	Admit func(ctx context.Context, id string, proof []byte) error

	// Now is the clock used to stamp commands. Defaults to time.Now.
	Now    func() time.Time
	Logger hclog.Logger
}

// DefaultConfig returns the tuned defaults: 500 ms heartbeat and election
// timeouts with a 250 ms leader lease, 64 entries per append, snapshots
// every 2048 entries keeping 1024 trailing logs.
//
// The log holds at most the trailing entries plus those since the last
// snapshot, so its file stays a few megabytes however many writes the
// cluster takes; a follower that falls further behind than the trailing
// entries is sent the leader's snapshot, which is compact (snapfile.go).
// Raft checks whether to snapshot once per SnapshotInterval, so a busy
// node writes a snapshot at most that often.
//
// The heartbeat timeout decides how long writes and linearizable reads
// stall when the leader dies: a follower checks for the leader at random
// intervals of one to two timeouts, so it starts an election one to three
// timeouts after it last heard from it, and the other survivor votes only
// once it has given up on the leader too (BenchmarkFailover in package
// node measures the stall). A leader whose process died is noticed sooner,
// by its closed port (see watchLeaderCrash). The leader sends heartbeats
// every tenth of the timeout, so a busy follower misses ten before it
// calls an election; much shorter timeouts make needless elections on
// loaded machines.
func DefaultConfig() Config {
	return Config{
		BindAddr:           "127.0.0.1:8444",
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		MaxAppendEntries:   64,
		SnapshotThreshold:  2048,
		SnapshotInterval:   30 * time.Second,
		TrailingLogs:       1024,
		ApplyTimeout:       10 * time.Second,
	}
}

// Validate checks the configuration, naming the field at fault.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "" || len(c.NodeID) > 128:
		return errors.New("raftstore: NodeID must be 1 to 128 characters")
	case c.DataDir == "":
		return errors.New("raftstore: DataDir is required")
	case c.Listener == nil && c.BindAddr == "":
		return errors.New("raftstore: BindAddr or Listener is required")
	case c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0:
		return errors.New("raftstore: HeartbeatTimeout and ElectionTimeout must be positive")
	case c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return errors.New("raftstore: LeaderLeaseTimeout must be positive and at most HeartbeatTimeout")
	case c.MaxAppendEntries <= 0 || c.MaxAppendEntries > 1024:
		return errors.New("raftstore: MaxAppendEntries must be 1 to 1024")
	case c.ApplyTimeout <= 0:
		return errors.New("raftstore: ApplyTimeout must be positive")
	}
	for _, t := range c.OrderedTables {
		if !validTable(t) {
			return fmt.Errorf("raftstore: OrderedTables: %w: %q", ErrInvalidTable, t)
		}
	}
	if err := c.TLS.validate(c.NodeID); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	return nil
}

// Store is one node of the replicated store.
type Store struct {
	cfg       Config
	logger    hclog.Logger
	fsm       *fsm
	logStore  *raftboltdb.BoltStore
	stable    *stableStore
	snapshots *raft.FileSnapshotStore
	mux       *mux
	trans     *raft.NetworkTransport
	raft      *raft.Raft
	fwd       *forwarder
	batch     *batcher

	readyTerm atomic.Uint64 // term in which this leader's no-op was applied
	verify    *rounds       // the leader's shared leadership checks
	readIndex *rounds       // a follower's shared read-index requests
	notifyCh  chan bool
	observeCh chan raft.Observation
	observer  *raft.Observer

	// sessionReads counts linearizable reads answered within a read
	// session without a read index of their own (ReadCounts).
	sessionReads atomic.Int64

	contactMu sync.Mutex
	failed    map[raft.ServerID]time.Time // followers failing heartbeats, since when last heard

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Open starts a node. A node with no state waits to be bootstrapped or
// added to a cluster.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "raftstore", Level: hclog.Warn})
	}
	cfg.Logger = cfg.Logger.With("node", cfg.NodeID)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: data dir: %w", err)
	}
	s := &Store{
		cfg: cfg, logger: cfg.Logger,
		notifyCh:  make(chan bool, 16),
		observeCh: make(chan raft.Observation, 64),
		failed:    map[raft.ServerID]time.Time{},
		closing:   make(chan struct{}),
	}
	if err := s.open(); err != nil {
		s.abort(false)
		return nil, err
	}
	return s, nil
}

func (s *Store) open() error {
	var err error
	dir := s.cfg.DataDir
	if s.fsm, err = newFSM(filepath.Join(dir, "state.db")); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	s.fsm.ordered = orderedBuckets(s.cfg.OrderedTables)
	s.logStore, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType},
	})
	if err != nil {
		return fmt.Errorf("raftstore: log store: %w", err)
	}
	s.stable = &stableStore{s: s.logStore}
	logs, err := newLogCache(s.logStore, logCacheEntries, logCacheBytes)
	if err != nil {
		return fmt.Errorf("raftstore: log cache: %w", err)
	}
	// One snapshot is kept: a new one replaces the old only once it is
	// complete, and the state file and the log after it are the other copy.
	if s.snapshots, err = raft.NewFileSnapshotStoreWithLogger(dir, 1, s.logger.Named("snapshots")); err != nil {
		return fmt.Errorf("raftstore: snapshot store: %w", err)
	}
	if err := s.catchUpFromSnapshot(); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	s.fsm.onRestore = s.cfg.OnRestore
	removeBackupLeftovers(dir)

	ln := s.cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", s.cfg.BindAddr); err != nil {
			return fmt.Errorf("raftstore: listen: %w", err)
		}
	}
	if s.cfg.AdvertiseAddr == "" {
		s.cfg.AdvertiseAddr = ln.Addr().String()
	}
	s.mux = newMux(s.cfg.NodeID, ln, s.cfg.TLS, s.cfg.Dial, s.idForAddr)
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &raftLayer{chanListener{m: s.mux, ch: s.mux.raftCh}},
		MaxPool: 4,
		Timeout: 10 * time.Second,
		// No pipelined replication. hashicorp/raft v1.7.3 can deadlock it:
		// when the response decoder stops (a follower answers with a newer
		// term), the sender blocks handing over its next request and never
		// sees the stop, and Shutdown waits for both for ever. With group
		// commit every entry is a batch, and pipelining buys nothing then
		// (hashicorp/raft#541).
		MaxRPCsInFlight: 1,
		Logger:          s.logger.Named("transport"),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	rc.MaxAppendEntries = s.cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.TrailingLogs = s.cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = true
	rc.NotifyCh = s.notifyCh
	rc.Logger = s.logger.Named("raft")
	if s.raft, err = raft.NewRaft(rc, s.fsm, logs, s.stable, s.snapshots, s.trans); err != nil {
		return fmt.Errorf("raftstore: start raft: %w", err)
	}
	s.observer = raft.NewObserver(s.observeCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(s.observer)
	s.verify = newRounds(s.closing, verifyRoundsInFlight, s.verifyLeader)
	s.readIndex = newRounds(s.closing, readRoundsInFlight, s.readIndexRemote)
	s.mux.admit.Store(&admitFunc{s.mayConnect})
	s.fwd = newForwarder(s)
	s.batch = newBatcher(s)
	s.wg.Add(6)
	go s.batch.run()
	go s.watchLeadership()
	go s.watchHeartbeats()
	go s.fwd.serve()
	go s.watchLeaderCrash()
	go s.releaseMappedLoop()
	return nil
}

// catchUpFromSnapshot restores the newest snapshot when the state file is
// behind it (a lost or replaced state file). Raft is told not to restore on
// start, so without this the entries in between would be missing.
func (s *Store) catchUpFromSnapshot() error {
	metas, err := s.snapshots.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	if metas[0].Index <= s.fsm.appliedIndex() {
		return nil
	}
	s.logger.Warn("state file is behind the newest snapshot; restoring it",
		"state_index", s.fsm.appliedIndex(), "snapshot_index", metas[0].Index)
	_, rc, err := s.snapshots.Open(metas[0].ID)
	if err != nil {
		return err
	}
	return s.fsm.Restore(rc)
}

// idForAddr maps a peer address to its server ID in the latest configuration.
func (s *Store) idForAddr(addr string) (string, bool) {
	if s.raft == nil {
		return "", false
	}
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if string(srv.Address) == addr {
			return string(srv.ID), true
		}
	}
	return "", false
}

// isMember reports whether id is in the latest configuration.
func (s *Store) isMember(id string) bool {
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// watchLeadership makes a new leader ready for linearizable reads: it applies
// a no-op command in its own term, so that its commit index covers every
// entry of earlier terms and every later entry reaches the state machine.
// While the state names no cluster, the command that does so (it changes
// nothing once one is named) stands in for the no-op.
func (s *Store) watchLeadership() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closing:
			return
		case leader := <-s.notifyCh:
			if !leader {
				continue
			}
			for s.raft.State() == raft.Leader {
				term := s.raft.CurrentTerm()
				c := &command{Type: cmdNoop}
				if s.fsm.clusterID() == "" {
					c = clusterIDCommand()
				}
				c.Time = s.cfg.Now().UnixNano()
				f := s.raft.Apply(c.encode(), s.cfg.ApplyTimeout)
				if err := s.await(context.Background(), f); errors.Is(err, ErrClosed) {
					return
				} else if err == nil {
					if s.raft.CurrentTerm() == term {
						s.readyTerm.Store(term)
					}
					break
				}
				select {
				case <-s.closing:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
}

func (s *Store) watchHeartbeats() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closing:
			return
		case o := <-s.observeCh:
			s.contactMu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				s.failed[d.PeerID] = d.LastContact
			case raft.ResumedHeartbeatObservation:
				delete(s.failed, d.PeerID)
			}
			s.contactMu.Unlock()
		}
	}
}

// Bootstrap makes this node the first member of a new cluster. It fails on a
// node that already has state.
func (s *Store) Bootstrap() error {
	err := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter,
		ID:       raft.ServerID(s.cfg.NodeID),
		Address:  raft.ServerAddress(s.cfg.AdvertiseAddr),
	}}}).Error()
	if err != nil {
		return fmt.Errorf("raftstore: bootstrap: %w", err)
	}
	return nil
}

// SetTLS replaces the node certificate and the cluster CA for new
// connections (certificate renewal, or the move from a bootstrap CA to the
// cluster CA at init). Existing connections keep theirs.
func (s *Store) SetTLS(m TLSMaterial) error {
	if err := m.validate(s.cfg.NodeID); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	s.mux.tlsm.Store(&m)
	return nil
}

// ID returns this node's server ID.
func (s *Store) ID() string { return s.cfg.NodeID }

// Addr returns the cluster address peers dial.
func (s *Store) Addr() string { return s.cfg.AdvertiseAddr }

// IsLeader reports whether this node is the leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the current leader's ID and address, empty if unknown.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// AppliedIndex returns the index of the last entry in this node's state.
func (s *Store) AppliedIndex() uint64 { return s.fsm.appliedIndex() }

// Close leaves gracefully: a leader hands leadership to another voter first,
// then the node stops. The data directory keeps its state.
func (s *Store) Close() error {
	if s.raft != nil && s.raft.State() == raft.Leader && s.voters() > 1 {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.logger.Warn("leadership transfer on shutdown failed", "error", err)
		}
	}
	return s.shutdown(true)
}

// Kill stops the node at once, as a crash would: no leadership transfer, and
// the state file is left unflushed and unmarked, so the next start rebuilds
// it from the snapshot and the log.
func (s *Store) Kill() error { return s.shutdown(false) }

func (s *Store) voters() int {
	n := 0
	for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

func (s *Store) shutdown(clean bool) error {
	s.closeOnce.Do(func() {
		close(s.closing)
		var errs []error
		if s.raft != nil {
			s.raft.DeregisterObserver(s.observer)
			errs = append(errs, s.raft.Shutdown().Error())
		}
		if s.fwd != nil {
			s.fwd.close()
		}
		if s.trans != nil {
			errs = append(errs, s.trans.Close())
		}
		if s.mux != nil {
			s.mux.close()
		}
		s.wg.Wait()
		s.abort(clean)
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// abort closes the files opened so far.
func (s *Store) abort(clean bool) {
	if s.mux != nil {
		s.mux.close()
	}
	if s.stable != nil {
		s.stable.close()
	}
	if s.logStore != nil {
		s.logStore.Close()
	}
	if s.fsm != nil {
		if err := s.fsm.close(clean); err != nil {
			s.logger.Error("closing the state file", "error", err)
		}
	}
}

// stableStore keeps Raft's term and vote, and drops writes once the node
// has stopped. Raft answers heartbeats on the transport's goroutines; one
// that passed Raft's shutdown check just before the node stopped can still
// record the leader's term after the file is closed, and Raft panics when
// that write fails. Such a write is dropped instead: the node is gone, and
// a heartbeat records no vote and no entry.
type stableStore struct {
	mu     sync.RWMutex
	closed bool
	s      raft.StableStore
}

var _ raft.StableStore = (*stableStore)(nil)

func (g *stableStore) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *stableStore) Set(k, v []byte) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil
	}
	return g.s.Set(k, v)
}

func (g *stableStore) SetUint64(k []byte, v uint64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil
	}
	return g.s.SetUint64(k, v)
}

func (g *stableStore) Get(k []byte) ([]byte, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil, ErrClosed
	}
	return g.s.Get(k)
}

func (g *stableStore) GetUint64(k []byte) (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return 0, ErrClosed
	}
	return g.s.GetUint64(k)
}
