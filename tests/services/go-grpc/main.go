// gRPC demo service and client for the tracer's integration tests: Go gRPC 1.33 from Debian
// (golang-google-grpc-dev, built in GOPATH mode from /usr/share/gocode), no tracing library.
//
// The service is demo.Greeter with hand-written method descriptors and a raw-bytes codec
// registered under the name "proto", so no generated code and no protobuf are needed and the wire
// is plain `application/grpc` as with any protobuf service:
//   - SayHello (unary): NAME -> "hello NAME"; `missing` -> NOT_FOUND, `fail` -> INTERNAL,
//     `metadata` -> the metadata the call arrived with, one "key=value" line each (sorted);
//   - Count (server streaming): N (decimal) -> N messages "1" .. "N".
// Like a mesh app, with DOWNSTREAM set each call first makes the same call downstream
// (`grpc://HOST:PORT`) or a GET (`http://...`), forwarding the incoming B3/W3C headers as
// outgoing metadata; a downstream failure is answered with the downstream's status, and a
// SayHello with a gRPC downstream is answered with the downstream's reply (so `metadata` shows
// what reached the last hop of a chain).
//
// Usage:
//   go-grpc-demo server PORT              (env DOWNSTREAM)
//   go-grpc-demo client --target HOST:PORT --method SayHello|Count [--name X] [--count N]
//                       [--metadata k=v ...] [--repeat K] [--interval-ms MS]
//   go-grpc-demo load --target HOST:PORT --tag HEX8 --seed N --duration-ms MS --latencies FILE
//                     [--conns C] [--workers W] [--rate R]
// The client makes K calls (0: until SIGTERM) on one connection and prints one JSON line per
// call: {"call":I,"status":CODE,"message":"...","responses":["..."]}, then `client done: K calls`;
// `{seq}` in a metadata value becomes the call number as 8 hex digits.
// The load (`cargo xtask bench`) runs W workers over C connections making SayHello calls back to
// back (saturation) or on a shared schedule of R calls/s (open loop: a late worker sends late and
// the lateness is reported; past a second of lateness the rest of the schedule is not sent), each
// call with fresh B3 metadata whose 64-bit trace id starts with the run's tag. It writes each
// successful call's latency in ns to FILE, one per line, and prints one line:
// `BENCH requests=N errors=E unsent=U duration_us=D lag_p99_ns=L`, then `first_error: ...` if any.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Trace-context headers a mesh expects the app to copy from the inbound to the outbound call.
var propagated = []string{
	"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
	"b3", "traceparent", "tracestate",
}

// rawCodec carries messages as they are: *[]byte in and out.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	switch m := v.(type) {
	case *[]byte:
		return *m, nil
	case []byte:
		return m, nil
	}
	return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*m = append([]byte(nil), data...)
	return nil
}

// "proto" replaces the default codec, so the content-type stays `application/grpc`.
func (rawCodec) Name() string { return "proto" }

func init() { encoding.RegisterCodec(rawCodec{}) }

// ---- server ----

type greeter struct {
	grpcDown *grpc.ClientConn
	httpDown string
	http     *http.Client
}

// The interface grpc.ServiceDesc.HandlerType asks the registered implementation to satisfy.
type greeterServer interface{}

func (g *greeter) forwarded(ctx context.Context) metadata.MD {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for _, h := range propagated {
		if v := in.Get(h); len(v) > 0 {
			out.Set(h, v...)
		}
	}
	return out
}

// downstream makes the call's downstream call, if any, and returns a gRPC downstream's SayHello
// reply; a non-nil error is the caller's answer.
func (g *greeter) downstream(ctx context.Context, method string, req []byte) ([]byte, error) {
	md := g.forwarded(ctx)
	if g.grpcDown != nil {
		octx := metadata.NewOutgoingContext(ctx, md)
		if method == "Count" {
			_, err := collect(octx, g.grpcDown, req)
			return nil, err
		}
		var reply []byte
		err := g.grpcDown.Invoke(octx, "/demo.Greeter/SayHello", &req, &reply)
		return reply, err
	}
	if g.httpDown != "" {
		hreq, err := http.NewRequestWithContext(ctx, "GET", g.httpDown, nil)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		for k, v := range md {
			hreq.Header.Set(k, v[0])
		}
		resp, err := g.http.Do(hreq)
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		io.Copy(ioutil.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return nil, status.Errorf(codes.Internal, "downstream answered HTTP %d", resp.StatusCode)
		}
	}
	return nil, nil
}

func (g *greeter) sayHello(ctx context.Context, name []byte) ([]byte, error) {
	if reply, err := g.downstream(ctx, "SayHello", name); err != nil || reply != nil {
		return reply, err
	}
	switch string(name) {
	case "missing":
		return nil, status.Error(codes.NotFound, "no greeting for missing")
	case "fail":
		return nil, status.Error(codes.Internal, "greeting failed")
	case "metadata":
		in, _ := metadata.FromIncomingContext(ctx)
		return []byte(describe(in)), nil
	}
	return append([]byte("hello "), name...), nil
}

// describe lists the application metadata of a call, one sorted "key=value" line each.
func describe(md metadata.MD) string {
	var lines []string
	for k, vs := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") ||
			k == "user-agent" || k == "content-type" || k == "te" || k == "accept-encoding" {
			continue
		}
		for _, v := range vs {
			lines = append(lines, k+"="+v)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (g *greeter) count(ctx context.Context, req []byte, send func([]byte) error) error {
	if _, err := g.downstream(ctx, "Count", req); err != nil {
		return err
	}
	n, err := strconv.Atoi(string(req))
	if err != nil || n < 0 {
		return status.Errorf(codes.InvalidArgument, "count %q is not a number", req)
	}
	for i := 1; i <= n; i++ {
		if err := send([]byte(strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return nil
}

var greeterDesc = grpc.ServiceDesc{
	ServiceName: "demo.Greeter",
	HandlerType: (*greeterServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "SayHello",
		Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			out, err := srv.(*greeter).sayHello(ctx, in)
			if err != nil {
				return nil, err
			}
			return &out, nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Count",
		ServerStreams: true,
		Handler: func(srv interface{}, stream grpc.ServerStream) error {
			var in []byte
			if err := stream.RecvMsg(&in); err != nil {
				return err
			}
			return srv.(*greeter).count(stream.Context(), in, func(m []byte) error {
				return stream.SendMsg(&m)
			})
		},
	}},
}

func server(port string) {
	g := &greeter{http: &http.Client{}}
	if d := os.Getenv("DOWNSTREAM"); strings.HasPrefix(d, "grpc://") {
		cc, err := grpc.Dial(strings.TrimPrefix(d, "grpc://"), grpc.WithInsecure())
		if err != nil {
			fatal(err)
		}
		g.grpcDown = cc
	} else if d != "" {
		g.httpDown = d
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fatal(err)
	}
	s := grpc.NewServer()
	s.RegisterService(&greeterDesc, g)
	fmt.Printf("listening on %s\n", port)
	fatal(s.Serve(ln))
}

// ---- client ----

// collect runs a Count call on cc and returns its messages.
func collect(ctx context.Context, cc *grpc.ClientConn, req []byte) ([][]byte, error) {
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Count", ServerStreams: true}, "/demo.Greeter/Count")
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(&req); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	var out [][]byte
	for {
		var m []byte
		err := stream.RecvMsg(&m)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(v string) error { *p = append(*p, v); return nil }

type result struct {
	Call      int      `json:"call"`
	Status    int      `json:"status"`
	Message   string   `json:"message"`
	Responses []string `json:"responses"`
}

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	target := fs.String("target", "", "HOST:PORT of the server")
	method := fs.String("method", "SayHello", "SayHello or Count")
	name := fs.String("name", "world", "SayHello's request")
	count := fs.Int("count", 3, "Count's request")
	repeat := fs.Int("repeat", 1, "number of calls on the one connection (0: until SIGTERM)")
	interval := fs.Int("interval-ms", 0, "pause between calls")
	var md pairs
	fs.Var(&md, "metadata", "k=v sent with every call ({seq}: the call number, 8 hex digits)")
	fs.Parse(args)
	if *target == "" || (*method != "SayHello" && *method != "Count") {
		fs.Usage()
		os.Exit(2)
	}
	cc, err := grpc.Dial(*target, grpc.WithInsecure())
	if err != nil {
		fatal(err)
	}
	defer cc.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	enc := json.NewEncoder(os.Stdout)
	calls := 0
	defer func() { fmt.Printf("client done: %d calls\n", calls) }()
	for i := 1; *repeat == 0 || i <= *repeat; i++ {
		pause := time.Duration(0)
		if i > 1 {
			pause = time.Duration(*interval) * time.Millisecond
		}
		select {
		case <-stop:
			return
		case <-time.After(pause):
		}
		out := metadata.MD{}
		for _, kv := range md {
			k, v := kv, ""
			if j := strings.IndexByte(kv, '='); j >= 0 {
				k, v = kv[:j], kv[j+1:]
			}
			out.Append(k, strings.ReplaceAll(v, "{seq}", fmt.Sprintf("%08x", i)))
		}
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), out), 10*time.Second)
		var msgs [][]byte
		if *method == "Count" {
			msgs, err = collect(ctx, cc, []byte(strconv.Itoa(*count)))
		} else {
			req, reply := []byte(*name), []byte(nil)
			err = cc.Invoke(ctx, "/demo.Greeter/SayHello", &req, &reply)
			if err == nil {
				msgs = [][]byte{reply}
			}
		}
		cancel()
		st := status.Convert(err)
		r := result{Call: i, Status: int(st.Code()), Message: st.Message(), Responses: []string{}}
		for _, m := range msgs {
			r.Responses = append(r.Responses, string(m))
		}
		enc.Encode(r)
		calls = i
	}
}

// ---- load ----

type loadWorker struct {
	latencies []int64
	lags      []int64
	errors    int
	firstErr  error
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	target := fs.String("target", "", "HOST:PORT of the server")
	conns := fs.Int("conns", 4, "connections (one grpc.ClientConn each)")
	workers := fs.Int("workers", 16, "concurrent calls, spread over the connections")
	rate := fs.Int("rate", 0, "calls per second over all workers (0: back to back)")
	durationMs := fs.Int("duration-ms", 5000, "how long calls are started")
	tagHex := fs.String("tag", "", "8 hex digits: the upper half of every 64-bit trace id")
	seed := fs.Int64("seed", 1, "seed of the ids")
	latFile := fs.String("latencies", "", "file for the latencies (ns, one per line)")
	fs.Parse(args)
	tag, err := strconv.ParseUint(*tagHex, 16, 32)
	if *target == "" || err != nil || *latFile == "" || *conns < 1 || *workers < 1 {
		fs.Usage()
		os.Exit(2)
	}
	ccs := make([]*grpc.ClientConn, *conns)
	for i := range ccs {
		if ccs[i], err = grpc.Dial(*target, grpc.WithInsecure()); err != nil {
			fatal(err)
		}
	}
	const lateGrace = time.Second
	start := time.Now().Add(20 * time.Millisecond)
	end := start.Add(time.Duration(*durationMs) * time.Millisecond)
	var next int64 = -1
	var period time.Duration
	if *rate > 0 {
		period = time.Second / time.Duration(*rate)
	}
	outs := make([]loadWorker, *workers)
	var wg sync.WaitGroup
	for w := range outs {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			out := &outs[w]
			rng := rand.New(rand.NewSource(*seed*1024 + int64(w)))
			cc := ccs[w%len(ccs)]
			req := []byte("bench")
			for {
				var due time.Time
				if period > 0 {
					due = start.Add(time.Duration(atomic.AddInt64(&next, 1)) * period)
					if !due.Before(end) || time.Now().After(end.Add(lateGrace)) {
						return
					}
					time.Sleep(time.Until(due))
				} else {
					if !time.Now().Before(end) {
						return
					}
					time.Sleep(time.Until(start))
				}
				sent := time.Now()
				if period > 0 {
					out.lags = append(out.lags, int64(sent.Sub(due)))
				}
				md := metadata.Pairs(
					"x-b3-traceid", fmt.Sprintf("%08x%08x", tag, rng.Uint32()),
					"x-b3-spanid", fmt.Sprintf("%016x", rng.Uint64()|1),
					"x-b3-sampled", "1",
				)
				ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 5*time.Second)
				var reply []byte
				err := cc.Invoke(ctx, "/demo.Greeter/SayHello", &req, &reply)
				cancel()
				if err == nil && string(reply) != "hello bench" {
					err = fmt.Errorf("unexpected reply %q", reply)
				}
				if err != nil {
					out.errors++
					if out.firstErr == nil {
						out.firstErr = err
					}
					continue
				}
				out.latencies = append(out.latencies, int64(time.Since(sent)))
			}
		}(w)
	}
	wg.Wait()
	took := time.Since(start)
	f, err := os.Create(*latFile)
	if err != nil {
		fatal(err)
	}
	var requests, errors int
	var lags []int64
	var firstErr error
	for _, o := range outs {
		requests += len(o.latencies)
		errors += o.errors
		lags = append(lags, o.lags...)
		if firstErr == nil {
			firstErr = o.firstErr
		}
		for _, l := range o.latencies {
			fmt.Fprintln(f, l)
		}
	}
	if err := f.Close(); err != nil {
		fatal(err)
	}
	unsent := 0
	if *rate > 0 {
		planned := *durationMs * *rate / 1000
		if planned > requests+errors {
			unsent = planned - requests - errors
		}
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	var lagP99 int64
	if len(lags) > 0 {
		lagP99 = lags[int(float64(len(lags)-1)*0.99+0.5)]
	}
	fmt.Printf("BENCH requests=%d errors=%d unsent=%d duration_us=%d lag_p99_ns=%d\n",
		requests, errors, unsent, took.Microseconds(), lagP99)
	if firstErr != nil {
		fmt.Printf("first_error: %v\n", firstErr)
	}
	for _, cc := range ccs {
		cc.Close()
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "server" {
		server(os.Args[2])
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "client" {
		client(os.Args[2:])
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "load" {
		load(os.Args[2:])
		return
	}
	fmt.Fprintln(os.Stderr, "usage: go-grpc-demo server PORT | go-grpc-demo client --target HOST:PORT ... | go-grpc-demo load ...")
	os.Exit(2)
}
