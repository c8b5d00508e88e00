package main

// Serving: a ModelInfer call whose reference the routes resolve is forwarded
// here to a replica, retried once elsewhere when the replica could not take
// it (as router/forwarding.py does); every other call, unary or streaming,
// and any ModelInfer this path cannot answer exactly as Python would, is
// relayed to the Python router as it came, metadata, deadline and status
// included.

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const inferMethod = "/inference.GRPCInferenceService/ModelInfer"

// A retry needs at least this much of the caller's deadline left (as in Python).
const minRetry = 2 * time.Millisecond

type proxy struct {
	routes    *table
	fallback  *grpc.ClientConn
	forwarded map[string]bool // metadata keys a replica is sent (trace context)
	stats     *stats
	local     *local // the inference server's front (-local); nil in the router
}

func (p *proxy) handle(_ interface{}, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	if method != inferMethod {
		return p.relay(stream, method)
	}
	if p.local != nil {
		return p.serveLocal(stream)
	}
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	model, ref, sequence, err := routing(request)
	if err != nil || model == "" || sequence {
		return p.relayUnary(stream, method, request) // Python names what is wrong
	}
	version, candidates, ok := p.routes.resolve(model, ref)
	if !ok {
		return p.relayUnary(stream, method, request)
	}
	if version != ref {
		request = withVersion(request, version)
	}
	started := time.Now()
	answer, err := p.forward(stream.Context(), model, version, candidates, request)
	p.stats.outcome(model, outcomeCode(stream.Context(), err), time.Since(started).Seconds())
	if err != nil {
		return err
	}
	return stream.SendMsg(&answer)
}

// deadlineSlack: how close to its deadline a cancelled call counts as timed out.
const deadlineSlack = 100 * time.Millisecond

// outcomeCode is the status to count for a call. This server's copy of the
// caller's deadline starts when the request arrives, so it runs a little late;
// the caller's own timer fires first and its RST_STREAM can end the call here
// as CANCELLED just before the copy expires. The caller saw DEADLINE_EXCEEDED,
// and that is what the metrics say.
func outcomeCode(ctx context.Context, err error) codes.Code {
	code := status.Code(err)
	if deadline, has := ctx.Deadline(); code == codes.Canceled && has && time.Until(deadline) < deadlineSlack {
		return codes.DeadlineExceeded
	}
	return code
}

func describe(model, version string) string {
	if version == "" {
		return fmt.Sprintf("model '%s'", model)
	}
	return fmt.Sprintf("model '%s' version '%s'", model, version)
}

func (p *proxy) forward(ctx context.Context, model, version string, candidates []*replica, request []byte) ([]byte, error) {
	out := metadata.MD{}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for key, values := range md {
			if p.forwarded[key] {
				out[key] = values
			}
		}
	}
	ctx = metadata.NewOutgoingContext(ctx, out)
	first := pick(candidates, nil)
	answer, err := p.call(ctx, model, first, request)
	failure, retryable := err.(refused)
	if !retryable {
		return answer, err
	}
	what := describe(model, version)
	deadline, has := ctx.Deadline()
	second := pick(candidates, first)
	if (has && time.Until(deadline) < minRetry) || second == nil {
		return nil, status.Errorf(codes.Unavailable, "%s: %s", what, failure)
	}
	p.stats.retry(model)
	answer, err = p.call(ctx, model, second, request)
	if failure, retryable = err.(refused); retryable {
		return nil, status.Errorf(codes.Unavailable, "%s: %s", what, failure)
	}
	return answer, err
}

// refused: the replica could not take the call, so another one may.
type refused string

func (r refused) Error() string { return string(r) }

// call sends once. UNAVAILABLE, or CANCELLED while the caller is still
// there (the replica's server ended the call, as a drain's grace runs out),
// comes back as `refused`; any other error is the replica's own answer, or
// the caller's cancel or deadline, and is passed on as it is.
func (p *proxy) call(ctx context.Context, model string, r *replica, request []byte) ([]byte, error) {
	atomic.AddInt64(&r.inFlight, 1)
	defer atomic.AddInt64(&r.inFlight, -1)
	p.stats.pick(model, r.address)
	var answer []byte
	err := r.conn.Invoke(ctx, inferMethod, &request, &answer)
	code := status.Code(err)
	transport := ctx.Err() == nil && (code == codes.Unavailable || code == codes.Canceled)
	if r.outcome(transport, err != nil) {
		p.stats.ejection(model, r.address)
	}
	if !transport {
		return answer, err
	}
	details := status.Convert(err).Message()
	if code == codes.Canceled {
		return nil, refused(fmt.Sprintf("replica %s cancelled the call: %s", r.address, details))
	}
	return nil, refused(fmt.Sprintf("replica %s: %s", r.address, details))
}

// forwardedPeer names the caller's address to the Python server behind this
// process, whose own peer is this process on loopback: its audit log records
// who called (common/access.py reads it only from a loopback peer).
const forwardedPeer = "x-modelport-forwarded-peer"

// relayed: the caller's metadata, minus what gRPC sets per hop, plus its address.
func relayed(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for key, values := range md {
		if !strings.HasPrefix(key, ":") && !strings.HasPrefix(key, "grpc-") &&
			key != "content-type" && key != "user-agent" && key != forwardedPeer {
			out[key] = values
		}
	}
	if caller, ok := peer.FromContext(ctx); ok && caller.Addr != nil {
		out[forwardedPeer] = []string{pythonPeer(caller.Addr)}
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// pythonPeer spells an address as grpc's Python servicer context does.
func pythonPeer(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.Network() + ":" + addr.String()
	}
	if tcp.IP.To4() != nil {
		return fmt.Sprintf("ipv4:%s:%d", tcp.IP, tcp.Port)
	}
	return fmt.Sprintf("ipv6:[%s]:%d", tcp.IP, tcp.Port)
}

func (p *proxy) relayUnary(stream grpc.ServerStream, method string, request []byte) error {
	var header, trailer metadata.MD
	var answer []byte
	err := p.fallback.Invoke(relayed(stream.Context()), method, &request, &answer,
		grpc.Header(&header), grpc.Trailer(&trailer))
	stream.SetTrailer(trailer)
	if err != nil {
		return err
	}
	if len(header) > 0 {
		stream.SetHeader(header)
	}
	return stream.SendMsg(&answer)
}

// relay pumps a call of any shape to the Python router and back.
func (p *proxy) relay(stream grpc.ServerStream, method string) error {
	ctx, cancel := context.WithCancel(relayed(stream.Context()))
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	upstream, err := p.fallback.NewStream(ctx, desc, method)
	if err != nil {
		return err
	}
	go func() {
		for {
			var message []byte
			if err := stream.RecvMsg(&message); err != nil {
				if err == io.EOF {
					upstream.CloseSend()
				} else {
					cancel() // the caller is gone: so is the upstream call
				}
				return
			}
			if err := upstream.SendMsg(&message); err != nil {
				return // the upstream's own error comes back on RecvMsg
			}
		}
	}()
	if header, err := upstream.Header(); err == nil && len(header) > 0 {
		stream.SendHeader(header)
	}
	for {
		var message []byte
		err := upstream.RecvMsg(&message)
		if err != nil {
			stream.SetTrailer(upstream.Trailer())
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := stream.SendMsg(&message); err != nil {
			return err
		}
	}
}
