// Prototype, a measurement and not the product: a per-request balancing
// forwarder outside Python, to see what forwarding costs when the language
// runtime is not the limit.
//
//	go build -o goforward . && ./goforward -backend mlp=127.0.0.1:8001 [-backend ...]
//
// It prints its port, then forwards every unary call as raw bytes (nothing is
// decoded but ModelInferRequest.model_name, read off the wire) to the replica
// of that model with the fewest requests in flight. Metadata and the caller's
// deadline travel with the call; the replica's status comes back unchanged.
// Streaming methods are not forwarded by this prototype.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// raw passes message bytes through; registered as "proto" so that it serves
// application/grpc and application/grpc+proto calls on both sides.
type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error { *(v.(*[]byte)) = data; return nil }
func (raw) Name() string                               { return "proto" }

type replica struct {
	conn     *grpc.ClientConn
	inFlight int64
}


var table = map[string][]*replica{}
var all []*replica

// modelName reads field 1 (model_name) of a serialized ModelInferRequest.
func modelName(msg []byte) string {
	pos := 0
	for pos < len(msg) {
		key, n := varint(msg[pos:])
		if n <= 0 {
			return ""
		}
		pos += n
		switch key & 7 {
		case 0:
			_, n = varint(msg[pos:])
			pos += n
		case 1:
			pos += 8
		case 5:
			pos += 4
		case 2:
			size, n := varint(msg[pos:])
			pos += n
			if key>>3 == 1 && pos+int(size) <= len(msg) {
				return string(msg[pos : pos+int(size)])
			}
			pos += int(size)
		default:
			return ""
		}
	}
	return ""
}

func varint(b []byte) (uint64, int) {
	var x uint64
	for i := 0; i < len(b) && i < 10; i++ {
		x |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return x, i + 1
		}
	}
	return 0, -1
}

func pick(candidates []*replica) *replica {
	best := candidates[0]
	for _, r := range candidates[1:] {
		if atomic.LoadInt64(&r.inFlight) < atomic.LoadInt64(&best.inFlight) {
			best = r
		}
	}
	return best
}

func forward(srv interface{}, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	candidates := all
	if strings.HasSuffix(method, "/ModelInfer") {
		model := modelName(request)
		candidates = table[model]
		if len(candidates) == 0 {
			return status.Errorf(codes.NotFound, "model '%s' is not served here", model)
		}
	}
	r := pick(candidates)
	atomic.AddInt64(&r.inFlight, 1)
	defer atomic.AddInt64(&r.inFlight, -1)
	ctx := stream.Context()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	var answer []byte
	if err := r.conn.Invoke(ctx, method, &request, &answer); err != nil {
		return err
	}
	return stream.SendMsg(&answer)
}

func main() {
	var specs multi
	flag.Var(&specs, "backend", "MODEL=HOST:PORT (repeatable)")
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	flag.Parse()
	encoding.RegisterCodec(raw{})
	for _, spec := range specs {
		parts := strings.SplitN(spec, "=", 2)
		conn, err := grpc.Dial(parts[1], grpc.WithInsecure())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		r := &replica{conn: conn}
		table[parts[0]] = append(table[parts[0]], r)
		all = append(all, r)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(lis.Addr().(*net.TCPAddr).Port)
	server := grpc.NewServer(grpc.UnknownServiceHandler(forward), grpc.MaxRecvMsgSize(64<<20))
	if err := server.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
