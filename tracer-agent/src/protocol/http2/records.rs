//! The records of a frames event (`tracer_common::h2`): a chunk of an HTTP/2 socket is a
//! sequence of records, each an 8-byte header (kind, length, payload offset) and its bytes.
//! Every length is checked against what the chunk holds: a malformed sequence ends with a
//! [`RecordError`] (the caller counts it and treats the rest of the chunk as lost), never a
//! panic. Also the trace log's summary of a chunk ([`summary`]): frame types, streams and
//! lengths, never payload bytes (a header block may hold credentials).

use std::fmt::Write as _;

use tracer_common::h2::{
    FRAME_HEADER_LEN, FrameHeader, REC_CONT, REC_FRAME, REC_LOST, RECORD_HEADER_LEN,
};

/// One record of a frames chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A frame starts: its header and the first bytes of its payload.
    Frame {
        header: FrameHeader,
        payload: &'a [u8],
    },
    /// More payload of this direction's frame in progress, from payload offset `offset`.
    Cont { offset: u32, payload: &'a [u8] },
    /// The kernel lost this direction's frame boundaries here.
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record at byte {at}: header or payload past the end of the chunk")]
    Truncated { at: usize },
    #[error("record at byte {at}: unknown kind {kind}")]
    UnknownKind { at: usize, kind: u8 },
    #[error("record at byte {at}: a frame record whose payload does not start at offset 0")]
    FrameOffset { at: usize },
    #[error("record at byte {at}: a frame record shorter than a frame header")]
    ShortFrame { at: usize },
}

/// The records of one chunk, in order; after an error, nothing more.
pub struct Records<'a> {
    data: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            at: 0,
            failed: false,
        }
    }

    fn next_record(&mut self) -> Result<Record<'a>, RecordError> {
        let at = self.at;
        let head = self
            .data
            .get(at..at + RECORD_HEADER_LEN)
            .ok_or(RecordError::Truncated { at })?;
        let kind = head[0];
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let offset = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let body_at = at + RECORD_HEADER_LEN;
        let body_len = match kind {
            REC_FRAME => FRAME_HEADER_LEN + len,
            REC_CONT => len,
            REC_LOST => 0,
            _ => return Err(RecordError::UnknownKind { at, kind }),
        };
        let body = self
            .data
            .get(body_at..body_at + body_len)
            .ok_or(RecordError::Truncated { at })?;
        self.at = body_at + body_len;
        Ok(match kind {
            REC_FRAME => {
                if offset != 0 {
                    return Err(RecordError::FrameOffset { at });
                }
                let (raw, payload) = body.split_at(FRAME_HEADER_LEN);
                let raw: &[u8; FRAME_HEADER_LEN] =
                    raw.try_into().map_err(|_| RecordError::ShortFrame { at })?;
                Record::Frame {
                    header: FrameHeader::parse(raw),
                    payload,
                }
            }
            REC_CONT => Record::Cont {
                offset,
                payload: body,
            },
            _ => Record::Lost,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.data.len() {
            return None;
        }
        let r = self.next_record();
        self.failed = r.is_err();
        Some(r)
    }
}

/// The name of a frame type (RFC 9113 §6), for logs.
#[must_use]
pub fn frame_name(kind: u8) -> &'static str {
    use tracer_common::h2 as f;
    match kind {
        f::DATA => "DATA",
        f::HEADERS => "HEADERS",
        f::PRIORITY => "PRIORITY",
        f::RST_STREAM => "RST_STREAM",
        f::SETTINGS => "SETTINGS",
        f::PUSH_PROMISE => "PUSH_PROMISE",
        f::PING => "PING",
        f::GOAWAY => "GOAWAY",
        f::WINDOW_UPDATE => "WINDOW_UPDATE",
        f::CONTINUATION => "CONTINUATION",
        _ => "UNKNOWN",
    }
}

/// Records listed at most by [`summary`].
const SUMMARY_RECORDS: usize = 16;

/// What the trace log shows of a frames chunk: each record's kind, and of a frame its type,
/// flags, stream, length and how many payload bytes came; never the payload itself.
#[must_use]
pub fn summary(data: &[u8]) -> String {
    let mut out = String::new();
    let mut records = Records::new(data);
    for (i, r) in records.by_ref().enumerate() {
        if i == SUMMARY_RECORDS {
            out.push_str(" ...");
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        let _ = match r {
            Ok(Record::Frame { header: h, payload }) => write!(
                out,
                "{} flags={:#x} stream={} len={} captured={}",
                frame_name(h.kind),
                h.flags,
                h.stream,
                h.len,
                payload.len()
            ),
            Ok(Record::Cont { offset, payload }) => {
                write!(out, "CONT offset={offset} captured={}", payload.len())
            }
            Ok(Record::Lost) => write!(out, "LOST"),
            Err(e) => write!(out, "malformed: {e}"),
        };
    }
    if out.is_empty() {
        out.push_str("no records");
    }
    out
}

/// Builders of record sequences, as the kernel lays them out: for the tests and the fuzz seeds.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "used by the tests and the fuzz seeds")
)]
pub mod build {
    use tracer_common::h2::{REC_CONT, REC_FRAME, REC_LOST};

    fn record(out: &mut Vec<u8>, kind: u8, len: usize, offset: u32) {
        out.push(kind);
        out.push(0);
        out.extend_from_slice(&u16::try_from(len).expect("record length").to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }

    /// A frame record: header for a payload of `len` bytes, of which `captured` came.
    pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, len: u32, captured: &[u8]) {
        record(out, REC_FRAME, captured.len(), 0);
        let l = len.to_be_bytes();
        out.extend_from_slice(&[l[1], l[2], l[3], kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(captured);
    }

    pub fn cont(out: &mut Vec<u8>, offset: u32, payload: &[u8]) {
        record(out, REC_CONT, payload.len(), offset);
        out.extend_from_slice(payload);
    }

    pub fn lost(out: &mut Vec<u8>) {
        record(out, REC_LOST, 0, 0);
    }

    /// An HPACK encoder: the representations RFC 7541 §6 defines, without Huffman.
    pub mod hpack {
        /// An integer with an `n`-bit prefix, the first byte's other bits being `flags`.
        pub fn int(out: &mut Vec<u8>, flags: u8, n: u32, v: usize) {
            let max = (1usize << n) - 1;
            if v < max {
                out.push(flags | u8::try_from(v).expect("fits the prefix"));
                return;
            }
            out.push(flags | u8::try_from(max).expect("prefix"));
            let mut rest = v - max;
            while rest >= 128 {
                out.push(u8::try_from(rest % 128).expect("7 bits") | 0x80);
                rest /= 128;
            }
            out.push(u8::try_from(rest).expect("7 bits"));
        }

        fn string(out: &mut Vec<u8>, s: &[u8]) {
            int(out, 0, 7, s.len());
            out.extend_from_slice(s);
        }

        /// A reference to entry `i` (static 1..=61, dynamic from 62).
        pub fn indexed(out: &mut Vec<u8>, i: usize) {
            int(out, 0x80, 7, i);
        }

        /// A literal field without indexing, new name.
        pub fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
            out.push(0);
            string(out, name.as_bytes());
            string(out, value);
        }

        /// A literal field added to the dynamic table, new name.
        pub fn literal_indexed(out: &mut Vec<u8>, name: &str, value: &str) {
            out.push(0x40);
            string(out, name.as_bytes());
            string(out, value.as_bytes());
        }

        /// A literal value whose name is table entry `i`, added to the dynamic table.
        pub fn literal_name_ref(out: &mut Vec<u8>, i: usize, value: &str) {
            int(out, 0x40, 6, i);
            string(out, value.as_bytes());
        }

        /// A block of literal fields without indexing.
        pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
            let mut out = Vec::new();
            for (n, v) in fields {
                literal(&mut out, n, v.as_bytes());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::h2::{DATA, HEADERS};

    use super::*;

    #[test]
    fn parses_every_kind_and_refuses_what_overruns() {
        let mut b = Vec::new();
        build::frame(&mut b, HEADERS, 4, 1, 3, b"abc");
        build::cont(&mut b, 3, b"de");
        build::lost(&mut b);
        let all: Vec<_> = Records::new(&b).collect::<Result<_, _>>().expect("valid");
        assert_eq!(all.len(), 3);
        assert!(
            matches!(all[0], Record::Frame { header, payload: b"abc" } if header.stream == 1 && header.kind == HEADERS)
        );
        assert_eq!(
            all[1],
            Record::Cont {
                offset: 3,
                payload: b"de"
            }
        );
        assert_eq!(all[2], Record::Lost);
        // Every prefix of a valid sequence cut inside a record is an error, not a panic.
        let mut cut_errors = 0;
        for n in 1..b.len() {
            if Records::new(&b[..n]).any(|r| r.is_err()) {
                cut_errors += 1;
            }
        }
        assert!(cut_errors > 0);
        let mut bad = Vec::new();
        build::frame(&mut bad, DATA, 0, 1, 5, b"");
        bad[0] = 9;
        assert_eq!(
            Records::new(&bad).next(),
            Some(Err(RecordError::UnknownKind { at: 0, kind: 9 }))
        );
        bad[0] = REC_FRAME;
        bad[4] = 1;
        assert_eq!(
            Records::new(&bad).next(),
            Some(Err(RecordError::FrameOffset { at: 0 }))
        );
    }

    #[test]
    fn summary_shows_frames_not_payloads() {
        let mut b = Vec::new();
        build::frame(&mut b, HEADERS, 5, 3, 21, b"authorization: s3cr3t");
        build::frame(&mut b, DATA, 1, 3, 100, b"\0\0\0\0\x5f");
        let s = summary(&b);
        assert_eq!(
            s,
            "HEADERS flags=0x5 stream=3 len=21 captured=21, DATA flags=0x1 stream=3 len=100 captured=5"
        );
        assert!(!s.contains("s3cr3t"));
        assert!(summary(&[1, 2]).starts_with("malformed"));
    }
}
