//! An HTTP/2 (gRPC-shaped) client connection older than the agent whose first call's answer is
//! read before the write that asked for it returns: what a sidecar-less gRPC client meets over
//! loopback when its writing thread is still on its way out of `write` while the answer arrives.
//! Here it is made certain instead of left to chance: the request's write is large and the
//! server leaves it blocked until the client said it has read the whole answer.
//!
//! The answer, in one read, starts with a `WINDOW_UPDATE` and a PING (what grpc-go sends back for
//! a request's DATA), then the head, one message and the trailers, which add entries to the
//! server's HPACK table; the second call's answer refers to those entries. So both calls get
//! their CLIENT span with `grpc-status` only if the agent took the socket for HTTP/2 at that read
//! (the first frames say HTTP/2 on their own), kept the whole answer (trailers included) back
//! until the write was reported, and decoded it.
//!
//! Two processes: the client ([`client_main`], traced: the guest suite's own binary with
//! `--early-answer-client PORT`) and the server, a thread of whoever drives it ([`EarlyAnswer`],
//! not traced). No library: frames and header blocks are written by hand (literal fields and
//! static-table references; the answers also index and reuse entries).

use std::{
    io::{BufRead as _, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::Duration,
};

use tracer_common::h2::{
    DATA, FLAG_ACK as ACK, FLAG_END_HEADERS as END_HEADERS, FLAG_END_STREAM as END_STREAM,
    FRAME_HEADER_LEN, FrameHeader, HEADERS, PING, PREFACE, SETTINGS, WINDOW_UPDATE,
};

/// The path of both calls.
pub const PATH: &str = "/demo.Greeter/SayHello";
/// The B3 trace and span ids each call carries (64-bit trace ids: padded to 128 in spans).
pub const CALLS: [(&str, &str); 2] = [
    ("5e1f0000000000a1", "5e1f0000000000b1"),
    ("5e1f0000000000a2", "5e1f0000000000b2"),
];
/// The client argument that selects [`client_main`].
pub const CLIENT_FLAG: &str = "--early-answer-client";

/// The first call's request body: far more than the two sockets' buffers hold, so its write
/// blocks until the server reads it.
const LARGE_BODY: usize = 4 << 20;
/// Frame payloads of the large body (the default `SETTINGS_MAX_FRAME_SIZE`).
const MAX_FRAME: usize = 16 * 1024;
/// Socket buffer sizes asked for on both ends (the kernel doubles them).
const SMALL_BUFFER: libc::c_int = 64 * 1024;
const WAIT: Duration = Duration::from_secs(30);

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame payload below 16 MiB");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK string literal, not Huffman-coded (all strings here are below 127 bytes).
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(
        u8::try_from(s.len())
            .ok()
            .filter(|l| *l < 127)
            .expect("short string"),
    );
    out.extend_from_slice(s.as_bytes());
}

/// A literal field with a literal name: `0x00` without indexing, `0x40` added to the table.
fn literal(out: &mut Vec<u8>, first: u8, name: &str, value: &str) {
    out.push(first);
    string(out, name);
    string(out, value);
}

/// A request's header block: `:method POST` and `:scheme http` from the static table, the rest
/// literal and not indexed.
fn request_block(trace: &str, span: &str) -> Vec<u8> {
    let mut b = vec![0x83, 0x86];
    for (name, value) in [
        (":path", PATH),
        (":authority", "early-answer"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-b3-traceid", trace),
        ("x-b3-spanid", span),
        ("x-b3-sampled", "1"),
    ] {
        literal(&mut b, 0x00, name, value);
    }
    b
}

/// A request on `stream`: its header block, then `body` bytes of DATA (a gRPC message prefix
/// first) in frames of at most [`MAX_FRAME`], the last one ending the stream.
fn request(stream: u32, call: usize, body: usize) -> Vec<u8> {
    let (trace, span) = CALLS[call];
    let mut out = Vec::with_capacity(body + body / MAX_FRAME * 9 + 512);
    frame(
        &mut out,
        HEADERS,
        END_HEADERS,
        stream,
        &request_block(trace, span),
    );
    let mut message = vec![0u8; body];
    let len = u32::try_from(body - 5).expect("small body");
    message[1..5].copy_from_slice(&len.to_be_bytes());
    let mut chunks = message.chunks(MAX_FRAME).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_STREAM
        } else {
            0
        };
        frame(&mut out, DATA, flags, stream, chunk);
    }
    out
}

/// The server's answers. The first indexes `content-type`, `grpc-status` and `grpc-message`
/// (dynamic entries 64, 63 and 62 afterwards); the second refers to them only.
fn answer(stream: u32, first: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let (head, trailers) = if first {
        // What grpc-go sends back for a request's DATA, ahead of the answer.
        frame(&mut out, WINDOW_UPDATE, 0, 0, &5u32.to_be_bytes());
        frame(&mut out, PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        // `:status 200` (static entry 8).
        let mut head = vec![0x88];
        literal(&mut head, 0x40, "content-type", "application/grpc");
        let mut trailers = Vec::new();
        literal(&mut trailers, 0x40, "grpc-status", "0");
        literal(&mut trailers, 0x40, "grpc-message", "");
        (head, trailers)
    } else {
        // `:status 200`, then dynamic entries 64 (`content-type`), 63 (`grpc-status`) and 62
        // (`grpc-message`).
        (vec![0x88, 0xc0], vec![0xbf, 0xbe])
    };
    frame(&mut out, HEADERS, END_HEADERS, stream, &head);
    frame(&mut out, DATA, 0, stream, &[0, 0, 0, 0, 2, b'o', b'k']);
    frame(
        &mut out,
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &trailers,
    );
    out
}

/// Reads one frame, skipping its payload.
fn read_frame(s: &mut impl Read) -> std::io::Result<FrameHeader> {
    let mut raw = [0u8; FRAME_HEADER_LEN];
    s.read_exact(&mut raw)?;
    let h = FrameHeader::parse(&raw);
    std::io::copy(&mut s.by_ref().take(u64::from(h.len)), &mut std::io::sink())?;
    Ok(h)
}

/// Reads frames up to the one that ends `stream` (DATA or HEADERS with `END_STREAM`).
fn read_to_end_of(s: &mut impl Read, stream: u32) -> std::io::Result<()> {
    loop {
        let f = read_frame(s)?;
        if f.stream == stream && f.flags & END_STREAM != 0 && matches!(f.kind, DATA | HEADERS) {
            return Ok(());
        }
    }
}

fn io_error(side: &'static str, what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("early-answer {side}: {what}: {e}")
}

fn small_buffer(s: &TcpStream, option: libc::c_int) -> Result<(), String> {
    let size = SMALL_BUFFER;
    // SAFETY: a valid socket and a c_int option value of the right length.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const size).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("4 bytes"),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("setsockopt: {}", std::io::Error::last_os_error()))
    }
}

/// The traced client: connects to `port`, exchanges the prefaces and SETTINGS, says
/// `connected`, and on `go` from stdin makes the two calls, saying what it did on stdout.
///
/// # Errors
/// Any socket error, or an answer other than the server's.
pub fn client_main(port: &str) -> Result<(), String> {
    let err = |what: &'static str| io_error("client", what);
    let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().map_err(|e| e.to_string())?))
        .map_err(err("connect"))?;
    small_buffer(&s, libc::SO_SNDBUF)?;
    let mut hello = PREFACE.to_vec();
    frame(&mut hello, SETTINGS, 0, 0, &[]);
    s.write_all(&hello).map_err(err("preface"))?;
    for _ in 0..2 {
        read_frame(&mut s).map_err(err("server SETTINGS"))?;
    }
    let mut ack = Vec::new();
    frame(&mut ack, SETTINGS, ACK, 0, &[]);
    s.write_all(&ack).map_err(err("SETTINGS ack"))?;
    println!("connected");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(err("stdin"))?;
    if line.trim() != "go" {
        return Err(format!("early-answer client: expected go, got {line:?}"));
    }
    // Call 1: the answer is read by another thread while this one is still in write(), on the
    // same descriptor (as any HTTP/2 library does: a duplicate would be another connection to
    // the syscall capture).
    let s = std::sync::Arc::new(s);
    let reader = std::sync::Arc::clone(&s);
    let read = thread::spawn(move || -> Result<(), String> {
        // The first read returns the whole answer: the server sent it in one write.
        let expected = answer(1, true);
        let mut got = vec![0; expected.len()];
        (&*reader).read_exact(&mut got).map_err(err("answer 1"))?;
        if got != expected {
            return Err("early-answer client: answer 1 is not the server's".to_owned());
        }
        println!("answer 1 read");
        Ok(())
    });
    let req = request(1, 0, LARGE_BODY);
    (&*s).write_all(&req).map_err(err("request 1"))?;
    read.join()
        .map_err(|_| "early-answer client: the reader panicked".to_owned())??;
    println!("request 1 written");
    // Call 2, in order: its answer refers to the table entries of answer 1.
    (&*s)
        .write_all(&request(3, 1, 7))
        .map_err(err("request 2"))?;
    let expected = answer(3, false);
    let mut got = vec![0; expected.len()];
    (&*s).read_exact(&mut got).map_err(err("answer 2"))?;
    if got != expected {
        return Err("early-answer client: answer 2 is not the server's".to_owned());
    }
    println!("answer 2 read");
    // Stay connected until told: the spans must not depend on the connection's end.
    line.clear();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

/// The driving side: the client process and the server thread's socket.
pub struct EarlyAnswer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    server: TcpStream,
}

impl EarlyAnswer {
    /// Starts the client (`bin` run with [`CLIENT_FLAG`] and the port) and waits until
    /// its connection is set up: prefaces and SETTINGS exchanged, no call yet. Start the agent
    /// after this, tracing [`EarlyAnswer::pid`].
    ///
    /// # Errors
    /// The client does not start or connect.
    pub fn connect(bin: &Path) -> Result<Self, String> {
        let err = |what: &'static str| io_error("server", what);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(err("bind"))?;
        let port = listener.local_addr().map_err(err("bind"))?.port();
        let mut child = Command::new(bin)
            .args([CLIENT_FLAG, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("early-answer client: no stdin/stdout pipe".to_owned());
        };
        let stdout = BufReader::new(stdout);
        let (mut server, _) = listener.accept().map_err(err("accept"))?;
        server
            .set_read_timeout(Some(WAIT))
            .map_err(err("timeout"))?;
        small_buffer(&server, libc::SO_RCVBUF)?;
        let mut preface = [0u8; PREFACE.len()];
        server
            .read_exact(&mut preface)
            .map_err(err("client preface"))?;
        read_frame(&mut server).map_err(err("client SETTINGS"))?;
        let mut hello = Vec::new();
        frame(&mut hello, SETTINGS, 0, 0, &[]);
        frame(&mut hello, SETTINGS, ACK, 0, &[]);
        server.write_all(&hello).map_err(err("SETTINGS"))?;
        let ack = read_frame(&mut server).map_err(err("client SETTINGS ack"))?;
        if ack.kind != SETTINGS || ack.flags != ACK {
            return Err("early-answer server: no SETTINGS ack".to_owned());
        }
        let mut me = Self {
            child,
            stdin,
            stdout,
            server,
        };
        me.expect("connected")?;
        Ok(me)
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn expect(&mut self, what: &str) -> Result<(), String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("early-answer client: {e}"))?;
        if line.trim() == what {
            Ok(())
        } else {
            Err(format!(
                "early-answer client: expected {what:?}, it said {:?} ({:?})",
                line.trim(),
                self.child.try_wait()
            ))
        }
    }

    /// Makes the two calls; the client stays connected until `self` is dropped.
    ///
    /// # Errors
    /// A step of either side failed.
    pub fn run(&mut self) -> Result<(), String> {
        let err = |what: &'static str| io_error("server", what);
        self.stdin.write_all(b"go\n").map_err(err("go"))?;
        let head = read_frame(&mut self.server).map_err(err("request 1 head"))?;
        if head.kind != HEADERS || head.stream != 1 {
            return Err("early-answer server: request 1 does not start with HEADERS".to_owned());
        }
        self.server
            .write_all(&answer(1, true))
            .map_err(err("answer 1"))?;
        // The request's write stays blocked (its rest unread) until the answer was read.
        self.expect("answer 1 read")?;
        read_to_end_of(&mut self.server, 1).map_err(err("request 1 body"))?;
        self.expect("request 1 written")?;
        read_to_end_of(&mut self.server, 3).map_err(err("request 2"))?;
        self.server
            .write_all(&answer(3, false))
            .map_err(err("answer 2"))?;
        self.expect("answer 2 read")
    }
}

impl Drop for EarlyAnswer {
    fn drop(&mut self) {
        // Told to go, the client exits; one that does not within the bound is killed.
        let _ = self.stdin.write_all(b"done\n");
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > until {
                let _ = self.child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}
