package fuzz

import (
	"sync"

	"github.com/tdxsim/tdxsim/scenario"
)

// genOptions is the generator options of a campaign.
func (cfg Config) genOptions() Options {
	return Options{Kernel: cfg.Kernel, Policies: cfg.Policies, Inject: cfg.Inject, Faults: cfg.Faults, Hostile: cfg.Hostile, MaxMemory: cfg.MaxMemory}
}

// result is one seed's generated scenario and its run.
type result struct {
	runs []run // one per schedule
	err  error
	done chan struct{}
}

// results runs the scenarios of campaign indices 0, 1, 2, ... on a pool
// of workers, at most a window of them ahead of the one the campaign
// consumes, and hands them back in index order: a run depends only on
// its seed, so the merged campaign is the same for any worker count.
type results struct {
	mu     sync.Mutex
	cond   *sync.Cond
	cfg    Config
	seedOf func(int) uint64
	opt    Options
	next   int // next index a worker takes
	want   int // the campaign has consumed indices below want
	window int
	limit  int // indices at or above limit are never run (0: no limit)
	byIdx  map[int]*result
	quit   bool
	wg     sync.WaitGroup
}

func newResults(cfg Config, seedOf func(int) uint64, workers, limit int) *results {
	r := &results{cfg: cfg, seedOf: seedOf, opt: cfg.genOptions(), window: 2 * workers, limit: limit, byIdx: map[int]*result{}}
	r.cond = sync.NewCond(&r.mu)
	for range workers {
		r.wg.Add(1)
		go r.work()
	}
	return r
}

func (r *results) work() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		for !r.quit && (r.next >= r.want+r.window || r.limit > 0 && r.next >= r.limit) {
			r.cond.Wait()
		}
		if r.quit {
			r.mu.Unlock()
			return
		}
		i := r.next
		r.next++
		res := r.slot(i)
		r.mu.Unlock()
		seed := r.seedOf(i)
		var f *scenario.File
		f, res.err = Generate(seed, r.opt)
		if res.err == nil {
			res.runs = r.cfg.runSchedules(f, seed)
		}
		close(res.done)
	}
}

// slot is index i's result, made on first use; r.mu held.
func (r *results) slot(i int) *result {
	res := r.byIdx[i]
	if res == nil {
		res = &result{done: make(chan struct{})}
		r.byIdx[i] = res
	}
	return res
}

// get waits for index i's runs and lets the workers move one further.
func (r *results) get(i int) ([]run, error) {
	r.mu.Lock()
	res := r.slot(i)
	r.mu.Unlock()
	<-res.done
	r.mu.Lock()
	delete(r.byIdx, i)
	r.want = i + 1
	r.cond.Broadcast()
	r.mu.Unlock()
	return res.runs, res.err
}

// stop ends the workers; runs in flight finish and are dropped.
func (r *results) stop() {
	r.mu.Lock()
	r.quit = true
	r.cond.Broadcast()
	r.mu.Unlock()
	r.wg.Wait()
}
