// Demo HTTP service for the tracer's integration tests: Go net/http, standard library only,
// no tracing library. Like a mesh app, it forwards the incoming B3/W3C headers on its
// downstream call unchanged, which is what lets the agent join its CLIENT span to its SERVER span.
//
// Usage: go-demo-svc [PORT]   (else env PORT); env DOWNSTREAM = base URL used by /call/<path>.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Trace-context headers a mesh expects the app to copy from the inbound to the outbound request.
var propagated = []string{
	"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
	"b3", "traceparent", "tracestate",
}

func reply(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

func main() {
	port := os.Getenv("PORT")
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	downstream := os.Getenv("DOWNSTREAM")
	client := &http.Client{}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []byte("hello\n"))
	})
	// The request headers as a JSON object (lowercase names): shows what a sidecar passed to the app.
	mux.HandleFunc("GET /headers", func(w http.ResponseWriter, r *http.Request) {
		h := map[string]string{}
		for k, v := range r.Header {
			h[strings.ToLower(k)] = strings.Join(v, ",")
		}
		body, _ := json.Marshal(h)
		reply(w, 200, body)
	})
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			reply(w, 400, []byte("bad status code\n"))
			return
		}
		if code == 204 || code == 304 {
			w.WriteHeader(code) // no body allowed
			return
		}
		reply(w, code, []byte(fmt.Sprintf("status %d\n", code)))
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			reply(w, 400, []byte(err.Error()))
			return
		}
		reply(w, 200, body)
	})
	mux.HandleFunc("GET /chunked", func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length and explicit flushes: net/http answers with Transfer-Encoding: chunked.
		w.WriteHeader(200)
		for i := 0; i < 4; i++ {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
		}
	})
	// A response written in one writev of three buffers (status line, headers, body) on the
	// hijacked connection: the capture must assemble a message from several user buffers.
	mux.HandleFunc("GET /writev", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			reply(w, 500, []byte(err.Error()))
			return
		}
		defer conn.Close()
		body := []byte("written with writev\n")
		bufs := net.Buffers{
			[]byte("HTTP/1.1 203 Non-Authoritative Information\r\n"),
			[]byte("Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n"),
			body,
		}
		bufs.WriteTo(conn)
	})
	mux.HandleFunc("GET /setcookie", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "id=s3cr3t-set-cookie")
		reply(w, 200, []byte("cookie set\n"))
	})
	mux.HandleFunc("GET /call/{path...}", func(w http.ResponseWriter, r *http.Request) {
		if downstream == "" {
			reply(w, 500, []byte("DOWNSTREAM not set\n"))
			return
		}
		target := downstream + "/" + r.PathValue("path")
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		req, err := http.NewRequest("GET", target, nil)
		if err != nil {
			reply(w, 500, []byte(err.Error()))
			return
		}
		for _, h := range propagated {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			reply(w, 502, []byte(err.Error()+"\n"))
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		reply(w, resp.StatusCode, body)
	})

	// Like /call, but forwarding no headers, from a goroutine the handler starts: the case the
	// write side's inject mode follows goroutines for.
	mux.HandleFunc("GET /gocall/{path...}", func(w http.ResponseWriter, r *http.Request) {
		if downstream == "" {
			reply(w, 500, []byte("DOWNSTREAM not set\n"))
			return
		}
		target := downstream + "/" + r.PathValue("path")
		type result struct {
			code int
			body []byte
		}
		done := make(chan result, 1)
		go func() {
			resp, err := client.Get(target)
			if err != nil {
				done <- result{502, []byte(err.Error() + "\n")}
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			done <- result{resp.StatusCode, body}
		}()
		res := <-done
		reply(w, res.code, res.body)
	})

	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", port)
	fmt.Fprintln(os.Stderr, http.Serve(ln, mux))
	os.Exit(1)
}
