// modelport-fastpath: the router's forwarding path outside Python.
//
// Started by `modelport serve router --fast-path on|auto` (router/fastpath.py),
// which then serves everything itself on a private loopback port: this
// process listens on the router's public address, forwards the ModelInfer
// calls that are a pure pick-and-forward straight to a replica, and relays
// every other call to the Python router.
//
// Started with -local by `modelport serve inference --fast-path on|auto`
// (inference/front_end.py), it is the inference server's front instead: every
// ModelInfer goes over a Unix socket to the Python process (local.go), every
// other call to its gRPC server on a private loopback port. Python's grpc.aio spends 1.5-1.8x a
// bare server's CPU per forwarded request however little it does; this path
// spends about half of one (benchmarks/README.md).
//
// Protocol with the parent, one JSON object per line: it writes route
// snapshots on stdin (routes.go); this process writes {"port": N} once
// listening, then a report of what it counted (stats.go) every 0.5 s it
// counted something. stdin closing (the parent is gone) or SIGTERM stops it:
// it stops accepting, lets calls in flight finish within -grace, and exits.
//
// Built with Debian's Go and grpc-go (golang-go, golang-google-grpc-dev), no
// module downloads: `make fastpath`.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
)

// raw passes message bytes through untouched; registered as "proto" so that
// it serves application/grpc(+proto) calls on both sides of the proxy.
type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error { *(v.(*[]byte)) = data; return nil }
func (raw) Name() string                               { return "proto" }

var stdout sync.Mutex

func emit(v interface{}) {
	line, _ := json.Marshal(v)
	stdout.Lock()
	defer stdout.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "modelport-fastpath:", err)
	os.Exit(2)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "public address")
	fallback := flag.String("fallback", "", "the Python router's private address")
	maxBytes := flag.Int("max-message-bytes", 64<<20, "largest message, bytes")
	grace := flag.Duration("grace", 25*time.Second, "time calls in flight get to finish")
	keys := flag.String("forward-keys", "traceparent,tracestate,baggage", "metadata keys sent to replicas")
	buckets := flag.String("buckets", "", "latency histogram bounds, seconds, comma separated")
	localSocket := flag.String("local", "", "the inference server's Unix socket: ModelInfer goes there (local.go), not to routes")
	flag.Parse()
	encoding.RegisterCodec(raw{})

	size := *maxBytes
	// As the Python router's channels: no retries of gRPC's own (the router
	// retries on another replica), a restarted replica reconnected soon.
	dial := func(address string) (*grpc.ClientConn, error) {
		return grpc.Dial(address, grpc.WithInsecure(),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(size), grpc.MaxCallSendMsgSize(size)),
			grpc.WithDisableRetry(),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
				BaseDelay: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}}),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second}))
	}
	upstream, err := dial(*fallback)
	if err != nil {
		fail(err)
	}
	var bounds []float64
	for _, b := range strings.Split(*buckets, ",") {
		if v, err := strconv.ParseFloat(strings.TrimSpace(b), 64); err == nil {
			bounds = append(bounds, v)
		}
	}
	forwarded := map[string]bool{}
	for _, k := range strings.Split(*keys, ",") {
		forwarded[strings.TrimSpace(k)] = true
	}
	p := &proxy{
		routes:    &table{routes: map[string]*route{}, conns: map[string]*replica{}, dial: dial},
		fallback:  upstream,
		forwarded: forwarded,
		stats:     newStats(bounds),
	}
	if *localSocket != "" {
		p.local = newLocal(*localSocket)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(err)
	}
	server := grpc.NewServer(grpc.UnknownServiceHandler(p.handle),
		grpc.MaxRecvMsgSize(size), grpc.MaxSendMsgSize(size),
		// As the Python server: clients may keep idle connections alive.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: 10 * time.Second, PermitWithoutStream: true}))
	stop := make(chan struct{}, 2)
	go func() { // routes from the parent; EOF: the parent is gone
		in := bufio.NewReaderSize(os.Stdin, 1<<20)
		for {
			line, err := in.ReadBytes('\n')
			if len(line) > 1 {
				if perr := p.routes.apply(line); perr != nil {
					fmt.Fprintln(os.Stderr, "modelport-fastpath: bad routes:", perr)
				}
			}
			if err != nil {
				stop <- struct{}{}
				return
			}
		}
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-signals; stop <- struct{}{} }()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if r := p.stats.take(); r != nil {
				emit(r)
			}
		}
	}()
	go func() {
		<-stop
		done := make(chan struct{})
		go func() { server.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(*grace):
			server.Stop()
		}
	}()
	emit(map[string]int{"port": lis.Addr().(*net.TCPAddr).Port})
	if err := server.Serve(lis); err != nil {
		fail(err)
	}
	if r := p.stats.take(); r != nil { // the last calls' counts
		emit(r)
	}
}
