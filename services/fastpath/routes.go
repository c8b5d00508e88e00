package main

// The routes the Python router publishes (router/fastpath_routes.py): per
// model, the version each reference it may forward resolves to, and the
// replicas serving each version. A reference that is not there (a traffic
// policy decides it, an unknown alias or version, no replica) is relayed to
// the Python router, which answers it in full, with its own messages.

import (
	"encoding/json"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

type publishedModel struct {
	Refs     map[string]string   `json:"refs"`     // model_version as sent -> version to call
	Replicas map[string][]string `json:"replicas"` // version -> addresses taking traffic for it
}

type published struct {
	Routes  map[string]publishedModel `json:"routes"`
	Ejected []string                  `json:"ejected"` // ejected by the Python router's books
}

type replica struct {
	address  string
	conn     *grpc.ClientConn
	inFlight int64
	// Passive ejection, the Python router's EjectionRule over the calls made
	// here: 3 transport failures in a row eject for 5 s, doubling with each
	// ejection in a row, at most 60 s; a success resets both counts.
	mu             sync.Mutex
	failures       int
	ejections      int
	ejectedUntil   time.Time
	ejectedByTable bool // the Python side ejected it (its own calls failed)
}

func (r *replica) ejected(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ejectedByTable || now.Before(r.ejectedUntil)
}

// outcome records one call; it returns true when that call ejected the replica.
func (r *replica) outcome(transportFailure, answered bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !transportFailure {
		r.failures = 0
		if !answered { // a success (an error the replica chose keeps the ejection count)
			r.ejections = 0
		}
		return false
	}
	r.failures++
	if r.failures < 3 {
		return false
	}
	seconds := 5 << uint(r.ejections)
	if seconds > 60 {
		seconds = 60
	}
	r.ejectedUntil = time.Now().Add(time.Duration(seconds) * time.Second)
	r.ejections++
	r.failures = 0
	return true
}

type route struct {
	refs     map[string]string
	replicas map[string][]*replica
}

type table struct {
	mu     sync.RWMutex
	routes map[string]*route
	conns  map[string]*replica // one channel per replica, kept across snapshots
	dial   func(address string) (*grpc.ClientConn, error)
}

// apply replaces the routes with a snapshot; channels of replicas no longer
// named close later, so calls already on them finish.
func (t *table) apply(line []byte) error {
	var p published
	if err := json.Unmarshal(line, &p); err != nil {
		return err
	}
	ejected := map[string]bool{}
	for _, address := range p.Ejected {
		ejected[address] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	routes := map[string]*route{}
	used := map[string]bool{}
	for model, m := range p.Routes {
		r := &route{refs: m.Refs, replicas: map[string][]*replica{}}
		for version, addresses := range m.Replicas {
			for _, address := range addresses {
				rep := t.conns[address]
				if rep == nil {
					conn, err := t.dial(address)
					if err != nil {
						continue
					}
					rep = &replica{address: address, conn: conn}
					t.conns[address] = rep
				}
				used[address] = true
				r.replicas[version] = append(r.replicas[version], rep)
			}
		}
		routes[model] = r
	}
	for address, rep := range t.conns {
		if !used[address] {
			delete(t.conns, address)
			go func(c *grpc.ClientConn) { time.Sleep(30 * time.Second); c.Close() }(rep.conn)
			continue
		}
		rep.mu.Lock()
		rep.ejectedByTable = ejected[address]
		rep.mu.Unlock()
	}
	t.routes = routes
	return nil
}

// resolve: the version to call and its candidates, or ok=false for the Python router.
func (t *table) resolve(model, ref string) (version string, candidates []*replica, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r := t.routes[model]
	if r == nil {
		return "", nil, false
	}
	version, found := r.refs[ref]
	if !found {
		return "", nil, false
	}
	candidates = r.replicas[version]
	return version, candidates, len(candidates) > 0
}

// pick: as the Python Balancer, two healthy candidates drawn at random and
// the one with fewer requests in flight (even load without herding on one
// idle replica); the ejected ones only when every candidate is ejected.
func pick(candidates []*replica, exclude *replica) *replica {
	now := time.Now()
	pool := make([]*replica, 0, len(candidates))
	for _, r := range candidates {
		if r != exclude && !r.ejected(now) {
			pool = append(pool, r)
		}
	}
	if len(pool) == 0 {
		for _, r := range candidates {
			if r != exclude {
				pool = append(pool, r)
			}
		}
	}
	switch len(pool) {
	case 0:
		return nil
	case 1:
		return pool[0]
	}
	i := rand.Intn(len(pool))
	j := rand.Intn(len(pool) - 1)
	if j >= i {
		j++
	}
	if atomic.LoadInt64(&pool[j].inFlight) < atomic.LoadInt64(&pool[i].inFlight) {
		return pool[j]
	}
	return pool[i]
}
