package main

// The inference service's front (-local): ModelInfer calls are handed to the
// Python process behind this one over a Unix socket, as framed bytes, instead
// of over gRPC. Python then spends nothing on HTTP/2 or gRPC's core for them
// (on two cores that transport alone cost as much as a bare Python server's
// whole answer: benchmarks/README.md), and still does everything else itself:
// parsing, validation, batching, the model, statistics, the answer's bytes.
//
// Frames, little-endian, each preceded by a u32 length of what follows:
//   call:   u8 0, u64 id, u64 timeout in µs (0: none), the request's bytes
//   cancel: u8 1, u64 id (the caller went away: Python stops working on it)
//   answer: u64 id, u32 gRPC status code, the response's bytes (code 0) or
//           the status message (any other code)
// One connection carries every call; answers come back in any order.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	frameCall   = 0
	frameCancel = 1
)

type answer struct {
	code    codes.Code
	payload []byte
}

type local struct {
	address string
	mu      sync.Mutex
	conn    *localConn // nil until the first call, and after the socket broke
}

type localConn struct {
	out     chan []byte
	mu      sync.Mutex
	pending map[uint64]chan answer
	next    uint64
	broken  error
	closed  chan struct{}
}

func newLocal(address string) *local { return &local{address: address} }

// connection: the live one, dialled again after Python's side went away.
func (l *local) connection() (*localConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		select {
		case <-l.conn.closed:
			l.conn = nil
		default:
			return l.conn, nil
		}
	}
	socket, err := net.DialTimeout("unix", l.address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &localConn{out: make(chan []byte, 1024), pending: map[uint64]chan answer{},
		closed: make(chan struct{})}
	go c.write(socket)
	go c.read(socket)
	l.conn = c
	return c, nil
}

// write sends frames as they come, flushing when none is waiting: a burst of
// calls goes out in one write.
func (c *localConn) write(socket net.Conn) {
	w := bufio.NewWriterSize(socket, 256<<10)
	for {
		select {
		case frame := <-c.out:
			if _, err := w.Write(frame); err != nil {
				c.fail(err, socket)
				return
			}
			if len(c.out) == 0 {
				if err := w.Flush(); err != nil {
					c.fail(err, socket)
					return
				}
			}
		case <-c.closed:
			return
		}
	}
}

func (c *localConn) read(socket net.Conn) {
	r := bufio.NewReaderSize(socket, 256<<10)
	var head [4]byte
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			c.fail(err, socket)
			return
		}
		body := make([]byte, binary.LittleEndian.Uint32(head[:]))
		if _, err := io.ReadFull(r, body); err != nil || len(body) < 12 {
			c.fail(errors.New("truncated answer"), socket)
			return
		}
		id := binary.LittleEndian.Uint64(body)
		c.mu.Lock()
		waiting, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ok { // else the caller went away before it
			waiting <- answer{codes.Code(binary.LittleEndian.Uint32(body[8:])), body[12:]}
		}
	}
}

// fail ends every call waiting on this connection: UNAVAILABLE, as a replica
// that went away mid-call.
func (c *localConn) fail(err error, socket net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return
	}
	c.broken = err
	socket.Close()
	close(c.closed)
	for id, waiting := range c.pending {
		waiting <- answer{codes.Unavailable, []byte("the inference server's process went away: " + err.Error())}
		delete(c.pending, id)
	}
}

func (c *localConn) call(ctx context.Context, request []byte) ([]byte, error) {
	var timeout uint64
	if deadline, has := ctx.Deadline(); has {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, status.Error(codes.DeadlineExceeded, "deadline exceeded before the call was sent")
		}
		timeout = uint64(left / time.Microsecond)
		if timeout == 0 {
			timeout = 1
		}
	}
	waiting := make(chan answer, 1)
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "the inference server's process went away: %s", c.broken)
	}
	c.next++
	id := c.next
	c.pending[id] = waiting
	c.mu.Unlock()
	frame := make([]byte, 4+17+len(request))
	binary.LittleEndian.PutUint32(frame, uint32(17+len(request)))
	frame[4] = frameCall
	binary.LittleEndian.PutUint64(frame[5:], id)
	binary.LittleEndian.PutUint64(frame[13:], timeout)
	copy(frame[21:], request)
	select {
	case c.out <- frame:
	case <-c.closed:
	}
	select {
	case got := <-waiting:
		if got.code != codes.OK {
			return nil, status.Error(got.code, string(got.payload))
		}
		return got.payload, nil
	case <-ctx.Done():
		c.mu.Lock()
		_, still := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if still {
			cancel := make([]byte, 4+9)
			binary.LittleEndian.PutUint32(cancel, 9)
			cancel[4] = frameCancel
			binary.LittleEndian.PutUint64(cancel[5:], id)
			select {
			case c.out <- cancel:
			case <-c.closed:
			default: // the queue is full: Python's own deadline ends it
			}
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// serveLocal answers one ModelInfer through the Python process.
func (p *proxy) serveLocal(stream grpc.ServerStream) error {
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	c, err := p.local.connection()
	if err != nil {
		return status.Errorf(codes.Unavailable, "the inference server's process is not reachable: %s", err)
	}
	response, err := c.call(stream.Context(), request)
	if err != nil {
		return err
	}
	return stream.SendMsg(&response)
}
