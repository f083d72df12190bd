//! A minimal OTLP/HTTP (protobuf) trace receiver that only counts spans.
//!
//! Why a receiver rather than `--stdout json`: the agent's cost must be measured on the path a
//! deployment uses (the export queue, batching, protobuf encoding, HTTP posts); the console
//! printer is a debugging path with another cost profile and no queue to overflow. Why
//! http/protobuf rather than gRPC: it needs no HTTP/2 or protobuf crates here, and it is a
//! standard OTLP transport the agent supports. The protobuf walk reads only what the counting
//! needs: each span's trace id and kind.
//!
//! Counts are kept per run tag: the bench puts a fresh random tag in the upper 32 bits of every
//! 64-bit B3 trace id it sends, so the padded 128-bit id is `00000000 00000000 TAG xxxxxxxx`.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
};

use anyhow::{Context as _, Result, bail};

/// `SpanKind` SERVER in the OTLP protobuf.
const KIND_SERVER: u64 = 2;

#[derive(Default)]
struct State {
    /// Run tag -> SERVER spans with that tag.
    server_spans: HashMap<u32, u64>,
    /// Spans of any other kind or tag (none are expected).
    other_spans: u64,
    /// The first malformed request, if any: a broken run.
    error: Option<String>,
}

pub struct Receiver {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Listens on a free loopback port; connections are served by threads until the bench exits.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind the OTLP receiver")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || {
                    if let Err(e) = serve(stream, &state) {
                        lock(&state).error.get_or_insert(format!("{e:#}"));
                    }
                });
            }
        });
        Ok(Self { port, state })
    }

    /// The base URL for `--otlp-endpoint` with `--otlp-protocol http/protobuf`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SERVER spans received so far whose trace id carries `tag`.
    pub fn server_spans(&self, tag: u32) -> u64 {
        lock(&self.state)
            .server_spans
            .get(&tag)
            .copied()
            .unwrap_or(0)
    }

    /// Spans that were not SERVER spans of a bench run, received so far.
    pub fn other_spans(&self) -> u64 {
        lock(&self.state).other_spans
    }

    /// Fails if any export request could not be read or decoded.
    pub fn check(&self) -> Result<()> {
        match &lock(&self.state).error {
            Some(e) => bail!("the bench's OTLP receiver got a bad export request: {e}"),
            None => Ok(()),
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves one keep-alive connection: POST /v1/traces with a Content-Length body, answered with
/// an empty `ExportTraceServiceResponse` (full success).
fn serve(stream: TcpStream, state: &Mutex<State>) -> Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if !line.starts_with("POST ") {
            bail!("unexpected request line {:?}", line.trim_end());
        }
        let mut length = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                bail!("connection closed inside a request head");
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let (name, value) = (name.to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = Some(value.parse::<usize>()?),
                "content-encoding" if value != "identity" => {
                    bail!("compressed export ({value}): the bench clears OTEL_* for the agent")
                }
                "transfer-encoding" => bail!("chunked export bodies are not supported here"),
                _ => {}
            }
        }
        let mut body = vec![0; length.context("export request without Content-Length")?];
        reader.read_exact(&mut body)?;
        count(&body, state)?;
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
    }
}

/// `ExportTraceServiceRequest`: `resource_spans` = 1 -> `ResourceSpans`: `scope_spans` = 2 ->
/// `ScopeSpans`: `spans` = 2 -> `Span`: `trace_id` = 1 (bytes), `kind` = 6 (enum).
fn count(body: &[u8], state: &Mutex<State>) -> Result<()> {
    let mut server = HashMap::<u32, u64>::new();
    let mut other = 0;
    for_each(body, 1, |resource_spans| {
        for_each(resource_spans, 2, |scope_spans| {
            for_each(scope_spans, 2, |span| {
                let (mut trace_id, mut kind) = (&[][..], 0);
                fields(span, |field, value| {
                    match (field, value) {
                        (1, Value::Bytes(b)) => trace_id = b,
                        (6, Value::Varint(k)) => kind = k,
                        _ => {}
                    }
                    Ok(())
                })?;
                match tag_of(trace_id) {
                    Some(tag) if kind == KIND_SERVER => *server.entry(tag).or_default() += 1,
                    _ => other += 1,
                }
                Ok(())
            })
        })
    })?;
    let mut st = lock(state);
    for (tag, n) in server {
        *st.server_spans.entry(tag).or_default() += n;
    }
    st.other_spans += other;
    Ok(())
}

/// The run tag of a 64-bit B3 id left-padded to 16 bytes.
fn tag_of(trace_id: &[u8]) -> Option<u32> {
    let (pad, id) = trace_id.split_at_checked(8)?;
    if pad.iter().any(|b| *b != 0) || id.len() != 8 {
        return None;
    }
    Some(u32::from_be_bytes(id[..4].try_into().ok()?))
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Calls `f` with every length-delimited field numbered `want` of the message `msg`.
fn for_each(msg: &[u8], want: u32, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    fields(msg, |field, value| match value {
        Value::Bytes(b) if field == want => f(b),
        _ => Ok(()),
    })
}

/// Walks the fields of one protobuf message.
fn fields<'a>(mut msg: &'a [u8], mut f: impl FnMut(u32, Value<'a>) -> Result<()>) -> Result<()> {
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let field = u32::try_from(key >> 3).context("protobuf field number out of range")?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut msg)?),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                msg = msg.get(n..).context("truncated protobuf fixed field")?;
                Value::Fixed
            }
            2 => {
                let n = usize::try_from(varint(&mut msg)?)?;
                let (bytes, rest) = msg
                    .split_at_checked(n)
                    .context("truncated protobuf length-delimited field")?;
                msg = rest;
                Value::Bytes(bytes)
            }
            wire => bail!("unsupported protobuf wire type {wire}"),
        };
        f(field, value)?;
    }
    Ok(())
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().context("truncated protobuf varint")?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("protobuf varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a length-delimited field.
    fn ld(field: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2];
        let mut n = body.len();
        while n >= 0x80 {
            out.push(u8::try_from(n & 0x7f).unwrap() | 0x80);
            n >>= 7;
        }
        out.push(u8::try_from(n).unwrap());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn counts_server_spans_per_tag() {
        let span = |tag: u32, kind: u8| {
            let mut id = vec![0u8; 8];
            id.extend(tag.to_be_bytes());
            id.extend([1, 2, 3, 4]);
            let mut s = ld(1, &id);
            s.extend(ld(5, b"GET"));
            s.extend([6 << 3, kind, (7 << 3) | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            ld(2, &s)
        };
        let mut scope = span(0xdead_beef, 2);
        scope.extend(span(0xdead_beef, 2));
        scope.extend(span(0xdead_beef, 3));
        scope.extend(span(7, 2));
        let body = ld(1, &ld(2, &scope));
        let state = Mutex::new(State::default());
        count(&body, &state).unwrap();
        let st = lock(&state);
        assert_eq!(st.server_spans.get(&0xdead_beef), Some(&2));
        assert_eq!(st.server_spans.get(&7), Some(&1));
        assert_eq!(st.other_spans, 1);
    }
}
