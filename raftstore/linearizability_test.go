package raftstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The model: one register per key. Unknown outcomes (a write whose answer
// was lost) are recorded as never returning, so the checker may place them
// anywhere after their call, including never.
type kvInput struct {
	op       string // get, put, cas
	key      string
	old, val string // cas: old "" means absent
}

type kvOutput struct {
	value   string // get: "" when absent
	ok      bool   // cas: swapped
	unknown bool
}

var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(kvInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.op {
		case "get":
			return out.value == st, st
		case "put":
			return true, in.val
		default: // cas
			if st == in.old {
				return out.unknown || out.ok, in.val
			}
			return out.unknown || !out.ok, st
		}
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(kvInput), output.(kvOutput)
		return fmt.Sprintf("%s(%s %q→%q) = %+v", in.op, in.key, in.old, in.val, out)
	},
}

// errUndecided is the verdict when the checker ran out of time: the
// history was not checked, which is not a pass.
var errUndecided = errors.New("the checker ran out of time: the history was not checked")

// verdict turns a checker result into the test's outcome.
func verdict(res porcupine.CheckResult) error {
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Illegal:
		return errors.New("the history is not linearizable")
	}
	return errUndecided
}

func TestLinearizableUnderPartitionsAndLeaderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	// A history the checker cannot decide in time proves nothing: run
	// again with fewer clients and faults, which makes a smaller history,
	// and fail if even the smallest cannot be decided.
	for _, size := range []struct{ workers, rounds int }{{6, 4}, {4, 2}, {2, 2}} {
		history, done := linearizabilityRun(t, size.workers, size.rounds)
		res := porcupine.CheckOperationsTimeout(kvModel, history, 60*time.Second)
		t.Logf("%d clients, %d faults: %d operations (%d with unknown outcome): %s",
			size.workers, size.rounds, len(history), len(history)-done, res)
		err := verdict(res)
		if err == nil {
			return
		}
		if !errors.Is(err, errUndecided) {
			t.Fatal(err)
		}
	}
	t.Fatal(errUndecided)
}

// minCompleted is how many operations with a known outcome a history needs
// to be worth checking. The clients run until they have that many, however
// slow the machine, rather than for a fixed time.
const minCompleted = 150

// linearizabilityRun runs workers clients against a new three-node cluster
// while a nemesis partitions and kills its leader rounds times, and returns
// the history and the number of operations whose outcome is known.
func linearizabilityRun(t *testing.T, workers, rounds int) ([]porcupine.Operation, int) {
	c := newCluster(t, 3, fastTimeouts)
	defer c.closeAll()
	mustCreateTable(t, c.node("node1"), "kv")

	var (
		mu      sync.Mutex
		history []porcupine.Operation
		clients atomic.Int64
		start   = time.Now()
		stop    atomic.Bool
		wg      sync.WaitGroup
		unique  atomic.Int64
		known   atomic.Int64
	)
	now := func() int64 { return int64(time.Since(start)) }
	keys := []string{"a", "b", "c"}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			client := int(clients.Add(1))
			for !stop.Load() {
				nodes := c.live()
				if len(nodes) == 0 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				s := nodes[rng.IntN(len(nodes))]
				in := kvInput{key: keys[rng.IntN(len(keys))]}
				switch r := rng.IntN(10); {
				case r < 4:
					in.op = "get"
				case r < 7:
					in.op, in.val = "put", fmt.Sprintf("v%d", unique.Add(1))
				default:
					in.op, in.val = "cas", fmt.Sprintf("v%d", unique.Add(1))
					if rng.IntN(3) > 0 {
						in.old = fmt.Sprintf("v%d", max(1, unique.Load()-int64(rng.IntN(4))))
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				call := now()
				out, err := runOp(ctx, s, in)
				ret := now()
				cancel()
				if err != nil {
					if in.op == "get" {
						continue // a failed read has no effect
					}
					out, ret = kvOutput{unknown: true}, math.MaxInt64
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
				if out.unknown {
					client = int(clients.Add(1)) // this client may still have an op in flight
				} else {
					known.Add(1)
				}
			}
		}(w)
	}

	defer func() { // also when the test fails below
		stop.Store(true)
		wg.Wait()
	}()

	// The nemesis: partitions, a leader kill and restart, heals.
	rng := rand.New(rand.NewPCG(42, 42))
	for round := 0; round < rounds; round++ {
		time.Sleep(700 * time.Millisecond)
		leader := c.waitLeader(settle)
		if round%2 == 0 {
			var rest []string
			for _, id := range c.ids {
				if id != leader.ID() {
					rest = append(rest, id)
				}
			}
			c.net.partition([]string{leader.ID()}, rest)
			time.Sleep(time.Duration(500+rng.IntN(500)) * time.Millisecond)
			c.net.heal()
		} else {
			id := leader.ID()
			c.kill(id)
			time.Sleep(time.Duration(500+rng.IntN(500)) * time.Millisecond)
			c.start(id, nil)
		}
	}
	time.Sleep(700 * time.Millisecond)
	eventually(t, 2*time.Minute, func() error {
		if n := known.Load(); n < minCompleted {
			return fmt.Errorf("%d operations completed, waiting for %d", n, minCompleted)
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()

	done := 0
	for _, op := range history {
		if !op.Output.(kvOutput).unknown {
			done++
		}
	}
	return history, done
}

func runOp(ctx context.Context, s *Store, in kvInput) (kvOutput, error) {
	key := []byte(in.key)
	switch in.op {
	case "get":
		v, err := s.Get(ctx, "kv", key)
		if errors.Is(err, ErrNotFound) {
			return kvOutput{}, nil
		}
		return kvOutput{value: string(v)}, err
	case "put":
		return kvOutput{}, s.Put(ctx, "kv", key, []byte(in.val))
	default:
		var old []byte
		if in.old != "" {
			old = []byte(in.old)
		}
		ok, _, err := s.CompareAndSwap(ctx, "kv", key, old, []byte(in.val))
		return kvOutput{ok: ok}, err
	}
}

// TestLinearizabilityCheckerCatchesAStaleRead makes sure the check above can
// fail: a history with a read of an overwritten value is rejected.
func TestLinearizabilityCheckerCatchesAStaleRead(t *testing.T) {
	h := []porcupine.Operation{
		{ClientId: 0, Input: kvInput{op: "put", key: "a", val: "v1"}, Call: 0, Output: kvOutput{}, Return: 10},
		{ClientId: 1, Input: kvInput{op: "put", key: "a", val: "v2"}, Call: 20, Output: kvOutput{}, Return: 30},
		{ClientId: 2, Input: kvInput{op: "get", key: "a"}, Call: 40, Output: kvOutput{value: "v1"}, Return: 50},
	}
	if porcupine.CheckOperations(kvModel, h) {
		t.Fatal("a stale read passed the check")
	}
}

// TestLinearizabilityCheckThatTimesOutIsNotAPass gives the checker a
// history it cannot decide in the time allowed (an illegal one, whose every
// order it must try): the verdict must not be a pass.
func TestLinearizabilityCheckThatTimesOutIsNotAPass(t *testing.T) {
	var h []porcupine.Operation
	for i := 0; i < 400; i++ { // every operation overlaps every other
		in, out := kvInput{op: "put", key: "a", val: fmt.Sprintf("v%d", i)}, kvOutput{}
		if i%2 == 1 {
			in, out = kvInput{op: "get", key: "a"}, kvOutput{value: fmt.Sprintf("v%d", i-1)}
		}
		h = append(h, porcupine.Operation{ClientId: i, Input: in, Call: int64(i), Output: out, Return: int64(1000 + i)})
	}
	// A read of a value nobody wrote: the checker must try every order
	// before it can call the history illegal.
	h = append(h, porcupine.Operation{ClientId: 400, Input: kvInput{op: "get", key: "a"}, Call: 500, Output: kvOutput{value: "never"}, Return: 2000})
	res := porcupine.CheckOperationsTimeout(kvModel, h, time.Millisecond)
	if res != porcupine.Unknown {
		t.Skipf("the checker decided the history in 1 ms (%s): nothing to test", res)
	}
	if err := verdict(res); !errors.Is(err, errUndecided) {
		t.Fatalf("verdict on a check that timed out: %v", err)
	}
}
