package main

// What this path counted, handed to the Python router as deltas (its
// RouterStats and latency histogram), so /metrics and `modelport routes`
// count every request wherever it was forwarded.

import (
	"sort"
	"sync"

	"google.golang.org/grpc/codes"
)

type stats struct {
	mu         sync.Mutex
	bounds     []float64
	outcomes   map[[2]string]int64 // (model, code name)
	picks      map[[2]string]int64 // (model, replica)
	ejections  map[[2]string]int64 // (model, replica)
	retries    map[string]int64
	latency    map[string][]float64 // per bucket, +Inf, then the sum
	hasReports bool
}

func newStats(bounds []float64) *stats {
	s := &stats{bounds: bounds}
	s.reset()
	return s
}

func (s *stats) reset() {
	s.outcomes, s.picks, s.ejections = map[[2]string]int64{}, map[[2]string]int64{}, map[[2]string]int64{}
	s.retries, s.latency, s.hasReports = map[string]int64{}, map[string][]float64{}, false
}

func (s *stats) outcome(model string, code codes.Code, seconds float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasReports = true
	s.outcomes[[2]string{model, code.String()}]++
	row := s.latency[model]
	if row == nil {
		row = make([]float64, len(s.bounds)+2)
		s.latency[model] = row
	}
	row[sort.SearchFloat64s(s.bounds, seconds)]++ // the first bound >= seconds, as bisect_left
	row[len(row)-1] += seconds
}

func (s *stats) pick(model, address string) {
	s.mu.Lock()
	s.picks[[2]string{model, address}]++
	s.hasReports = true
	s.mu.Unlock()
}

func (s *stats) ejection(model, address string) {
	s.mu.Lock()
	s.ejections[[2]string{model, address}]++
	s.mu.Unlock()
}

func (s *stats) retry(model string) {
	s.mu.Lock()
	s.retries[model]++
	s.mu.Unlock()
}

type report struct {
	Outcomes  [][3]interface{}     `json:"outcomes"`  // model, code, count
	Picks     [][3]interface{}     `json:"picks"`     // model, replica, count
	Ejections [][3]interface{}     `json:"ejections"` // model, replica, count
	Retries   map[string]int64     `json:"retries"`
	Latency   map[string][]float64 `json:"latency"`
}

func triples(counts map[[2]string]int64) [][3]interface{} {
	out := [][3]interface{}{}
	for key, n := range counts {
		out = append(out, [3]interface{}{key[0], key[1], n})
	}
	return out
}

// take returns what was counted since the last call (nil: nothing) and starts afresh.
func (s *stats) take() *report {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasReports && len(s.ejections) == 0 && len(s.retries) == 0 {
		return nil
	}
	r := &report{triples(s.outcomes), triples(s.picks), triples(s.ejections), s.retries, s.latency}
	s.reset()
	return r
}
