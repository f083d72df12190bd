//! A raw HTTP/1.1 client over a std `TcpStream`.
//!
//! Tests must control every header byte (B3 variants, credentials) and the connection itself
//! (100 requests on one keep-alive connection, pipelining), which a high-level client hides.
//! Helpers panic with context: they are for tests only.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One parsed response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names as received; look them up with [`HttpResponse::header`].
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Number of chunks (not counting the final empty one) when `chunked`.
    pub chunks: usize,
}

impl HttpResponse {
    /// First header with this name (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection; requests on it reuse the connection (HTTP/1.1 keep-alive).
pub struct HttpConn {
    reader: BufReader<TcpStream>,
    host: String,
    /// Methods of requests sent and not yet answered, so HEAD responses are read without a body.
    pending: VecDeque<String>,
}

impl HttpConn {
    /// Connects to 127.0.0.1:`port`.
    ///
    /// # Panics
    /// If the connection fails.
    #[must_use]
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            reader: BufReader::new(stream),
            host: format!("127.0.0.1:{port}"),
            pending: VecDeque::new(),
        }
    }

    /// The client's own port: what the server sees as the peer port.
    ///
    /// # Panics
    /// If the socket has no local address (it always has once connected).
    #[must_use]
    pub fn local_port(&self) -> u16 {
        self.reader
            .get_ref()
            .local_addr()
            .expect("connected socket")
            .port()
    }

    /// The bytes of one request. `Host` and `User-Agent` are added unless given in `headers`;
    /// `Content-Length` is added when there is a body.
    #[must_use]
    pub fn format_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !has("host") {
            let _ = write!(head, "Host: {}\r\n", self.host);
        }
        if !has("user-agent") {
            head += "User-Agent: tracer-tests/1\r\n";
        }
        for (k, v) in headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        if let Some(b) = body
            && !has("content-length")
            && !has("transfer-encoding")
        {
            let _ = write!(head, "Content-Length: {}\r\n", b.len());
        }
        head += "\r\n";
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        bytes
    }

    /// Sends one request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> HttpResponse {
        let bytes = self.format_request(method, path, headers, body);
        self.send(method, &bytes);
        self.read_response()
    }

    /// Sends a request whose body is sent with `Transfer-Encoding: chunked`, one chunk per element.
    pub fn request_chunked(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> HttpResponse {
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.push(("Transfer-Encoding", "chunked"));
        let mut bytes = self.format_request(method, path, &all, None);
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            bytes.extend_from_slice(c);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        self.send(method, &bytes);
        self.read_response()
    }

    /// Writes request bytes as they are (several requests at once = pipelining). `method` is the
    /// method of each request contained, in order, so their responses can be read back.
    ///
    /// # Panics
    /// If the write fails.
    pub fn send_raw(&mut self, methods: &[&str], bytes: &[u8]) {
        self.pending.extend(methods.iter().map(|m| (*m).to_owned()));
        self.reader
            .get_mut()
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing to {}: {e}", self.host));
    }

    fn send(&mut self, method: &str, bytes: &[u8]) {
        self.send_raw(&[method], bytes);
    }

    /// Reads the next response (skipping `1xx` interim responses such as `100 Continue`).
    ///
    /// # Panics
    /// On a malformed response, a timeout or a closed connection.
    pub fn read_response(&mut self) -> HttpResponse {
        let method = self.pending.pop_front().unwrap_or_else(|| "GET".to_owned());
        loop {
            let status_line = self.line();
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line from {}: {status_line:?}", self.host));
            let mut headers = Vec::new();
            loop {
                let l = self.line();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let mut resp = HttpResponse {
                status,
                headers,
                body: Vec::new(),
                chunked: false,
                chunks: 0,
            };
            self.read_body(&method, &mut resp);
            return resp;
        }
    }

    fn read_body(&mut self, method: &str, resp: &mut HttpResponse) {
        if method.eq_ignore_ascii_case("HEAD") || matches!(resp.status, 204 | 304) {
            return;
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            resp.chunked = true;
            loop {
                let size_line = self.line();
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    while !self.line().is_empty() {} // trailers
                    return;
                }
                resp.chunks += 1;
                let start = resp.body.len();
                resp.body.resize(start + size, 0);
                self.reader
                    .read_exact(&mut resp.body[start..])
                    .expect("reading chunk data");
                assert!(self.line().is_empty(), "missing CRLF after chunk data");
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .unwrap_or_else(|_| panic!("bad Content-Length {len:?}"));
            resp.body.resize(len, 0);
            self.reader
                .read_exact(&mut resp.body)
                .expect("reading body");
        } else {
            self.reader
                .read_to_end(&mut resp.body)
                .expect("reading body to EOF");
        }
    }

    /// One line without its CRLF.
    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .unwrap_or_else(|e| panic!("reading from {}: {e}", self.host));
        assert!(
            n > 0,
            "connection to {} closed while reading a response",
            self.host
        );
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// One request on a fresh connection.
#[must_use]
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    HttpConn::connect(port).request(method, path, headers, body)
}

/// `GET path` on a fresh connection.
#[must_use]
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(port, "GET", path, headers, None)
}
