package main

// The Unix-socket framing of local.go against a peer written here from the
// frame layout: answers out of order, errors as statuses, a cancel frame for a
// caller that went away, UNAVAILABLE when the peer's side breaks.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type frame struct {
	kind    byte
	id      uint64
	timeout uint64
	body    []byte
}

// fakePython accepts one connection and hands each frame to reply (on its own goroutine).
func fakePython(t *testing.T, reply func(f frame, answer func(id uint64, code uint32, payload []byte))) (string, func()) {
	address := filepath.Join(t.TempDir(), "calls.sock")
	listener, err := net.Listen("unix", address)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			var writing sync.Mutex
			answer := func(id uint64, code uint32, payload []byte) {
				out := make([]byte, 16+len(payload))
				binary.LittleEndian.PutUint32(out, uint32(12+len(payload)))
				binary.LittleEndian.PutUint64(out[4:], id)
				binary.LittleEndian.PutUint32(out[12:], code)
				copy(out[16:], payload)
				writing.Lock()
				conn.Write(out)
				writing.Unlock()
			}
			go func() {
				var head [4]byte
				for {
					if _, err := io.ReadFull(conn, head[:]); err != nil {
						return
					}
					body := make([]byte, binary.LittleEndian.Uint32(head[:]))
					if _, err := io.ReadFull(conn, body); err != nil {
						return
					}
					f := frame{kind: body[0], id: binary.LittleEndian.Uint64(body[1:])}
					if f.kind == frameCall {
						f.timeout, f.body = binary.LittleEndian.Uint64(body[9:]), body[17:]
					}
					go reply(f, answer)
				}
			}()
		}
	}()
	return address, func() {
		listener.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
}

func TestCallsAreAnsweredByIdInAnyOrder(t *testing.T) {
	address, stop := fakePython(t, func(f frame, answer func(uint64, uint32, []byte)) {
		// Later calls answer first: the longer the request, the shorter the wait.
		time.Sleep(time.Duration(20-len(f.body)) * time.Millisecond)
		answer(f.id, 0, append([]byte("re:"), f.body...))
	})
	defer stop()
	c, err := newLocal(address).connection()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 15; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			request := []byte(fmt.Sprintf("%0*d", i+1, i))
			got, err := c.call(context.Background(), request)
			if err != nil || string(got) != "re:"+string(request) {
				t.Errorf("call %d: %q %v", i, got, err)
			}
		}(i)
	}
	wg.Wait()
}

func TestAStatusComesBackAsTheCallsError(t *testing.T) {
	address, stop := fakePython(t, func(f frame, answer func(uint64, uint32, []byte)) {
		answer(f.id, uint32(codes.NotFound), []byte("Request for unknown model: 'nope' is not found"))
	})
	defer stop()
	c, _ := newLocal(address).connection()
	_, err := c.call(context.Background(), []byte("x"))
	if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "Request for unknown model: 'nope' is not found" {
		t.Fatalf("got %v", err)
	}
}

func TestADeadlineIsSentAndAGoneCallerCancels(t *testing.T) {
	seen := make(chan frame, 4)
	address, stop := fakePython(t, func(f frame, answer func(uint64, uint32, []byte)) { seen <- f })
	defer stop()
	c, _ := newLocal(address).connection()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.call(ctx, []byte("slow"))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	call := <-seen
	if call.kind != frameCall || call.timeout == 0 || call.timeout > 300_000 {
		t.Fatalf("call frame %+v", call)
	}
	if cancelled := <-seen; cancelled.kind != frameCancel || cancelled.id != call.id {
		t.Fatalf("no cancel for call %d: %+v", call.id, cancelled)
	}
}

func TestABrokenSocketFailsCallsAndIsDialledAgain(t *testing.T) {
	var once sync.Once
	var breakIt func()
	address, stop := fakePython(t, func(f frame, answer func(uint64, uint32, []byte)) {
		if string(f.body) == "break" {
			once.Do(breakIt)
			return
		}
		answer(f.id, 0, []byte("ok"))
	})
	defer stop()
	breakIt = stop
	l := newLocal(address)
	c, _ := l.connection()
	if _, err := c.call(context.Background(), []byte("break")); status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v", err)
	}
	if _, err := l.connection(); err == nil {
		t.Fatal("dialled a closed listener")
	}
}
