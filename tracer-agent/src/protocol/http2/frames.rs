//! One direction of an HTTP/2 connection, from records to frame events: the frame whose
//! payload is still coming (`REC_CONT`), header blocks reassembled from HEADERS and
//! CONTINUATION (padding and priority removed) and decoded by the direction's HPACK decoder.
//!
//! A header block is held up to [`MAX_BLOCK`] bytes; a longer one, one cut by the capture
//! (payload bytes missing) or by a loss is decoded as far as it goes and the decoder
//! desynchronised, since the rest may have changed its dynamic table. A loss (`REC_LOST`, a
//! sequence gap) also desynchronises it. The decoder is made when the direction's first frame
//! is seen: a fresh one if the connection was followed from its start (accept/connect seen, or
//! the direction starts with the SETTINGS frame that opens every connection while the other
//! direction did not start mid-way), else a mid-way one that marks references to entries it
//! never saw.

use bytes::Bytes;
use tracer_common::h2::{
    CONTINUATION, DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY,
    FrameHeader, GOAWAY, HEADERS, PUSH_PROMISE, RST_STREAM, SETTINGS,
};

use super::{
    Http2Stats,
    hpack::{Decoder, Field, HpackStats},
    records::Record,
};

/// Header-block bytes held per direction (a block in progress); past it the block is cut.
pub const MAX_BLOCK: usize = 16 * 1024;
/// Bytes of the gRPC message prefix (compressed flag, 4-byte length).
pub const GRPC_PREFIX: usize = 5;

/// What a direction's frames tell the connection.
#[derive(Debug)]
pub enum FrameEvent {
    /// A header block (HEADERS and its CONTINUATIONs), decoded.
    Headers {
        stream: u32,
        end_stream: bool,
        fields: Vec<Field>,
        /// The block was not whole: fields past the cut are missing.
        cut: bool,
        /// When the HEADERS frame was seen.
        start_ns: u64,
    },
    /// A DATA frame: its data length (padding excluded) and the first data bytes captured.
    Data {
        stream: u32,
        len: u64,
        end_stream: bool,
        prefix: Prefix,
    },
    Reset {
        stream: u32,
        code: Option<u32>,
    },
    GoAway {
        last: Option<u32>,
    },
}

impl FrameEvent {
    /// The stream the event is about (0 for the connection).
    #[must_use]
    pub fn stream(&self) -> u32 {
        match self {
            Self::Headers { stream, .. }
            | Self::Data { stream, .. }
            | Self::Reset { stream, .. } => *stream,
            Self::GoAway { .. } => 0,
        }
    }
}

/// Up to [`GRPC_PREFIX`] bytes from the start of a DATA frame's data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    pub bytes: [u8; GRPC_PREFIX],
    pub len: u8,
}

impl Prefix {
    fn of(b: &[u8]) -> Self {
        let mut p = Self::default();
        let n = b.len().min(GRPC_PREFIX);
        p.bytes[..n].copy_from_slice(&b[..n]);
        p.len = u8::try_from(n).unwrap_or(0);
        p
    }

    /// The gRPC message prefix, when all of it was captured: compressed flag and length.
    #[must_use]
    pub fn grpc(self) -> Option<(u8, u32)> {
        (usize::from(self.len) == GRPC_PREFIX).then(|| {
            let b = self.bytes;
            (b[0], u32::from_be_bytes([b[1], b[2], b[3], b[4]]))
        })
    }
}

/// A frame whose payload bytes are still coming.
#[derive(Debug)]
struct Partial {
    header: FrameHeader,
    /// Payload bytes this frame's handling needs.
    need: usize,
    got: Vec<u8>,
    /// Payload bytes are missing before the end of `need`.
    cut: bool,
    start_ns: u64,
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
    cut: bool,
    start_ns: u64,
}

/// One direction's frame state.
#[derive(Debug, Default)]
pub struct Half {
    decoder: Option<Decoder>,
    frame: Option<Partial>,
    block: Option<Block>,
    /// Events were lost before the direction's first frame.
    lost_before_start: bool,
    started_midway: bool,
}

/// What is known of whether a connection was followed from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Known,
    IfSettings,
    No,
}

/// Payload bytes the handling of a frame needs.
fn need(h: &FrameHeader) -> usize {
    let len = h.len as usize;
    match h.kind {
        HEADERS | CONTINUATION => len.min(MAX_BLOCK),
        DATA => len.min(GRPC_PREFIX + usize::from(h.flags & FLAG_PADDED != 0)),
        RST_STREAM => len.min(4),
        GOAWAY => len.min(8),
        _ => 0,
    }
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

impl Half {
    /// Bytes held beyond the half itself.
    #[must_use]
    pub fn footprint(&self) -> usize {
        self.decoder.as_ref().map_or(0, Decoder::footprint)
            + self.frame.as_ref().map_or(0, |p| p.got.capacity())
            + self.block.as_ref().map_or(0, |b| b.bytes.capacity())
    }

    /// What the decoder counted since the last call.
    pub fn take_stats(&mut self) -> HpackStats {
        self.decoder
            .as_mut()
            .map(Decoder::take_stats)
            .unwrap_or_default()
    }

    /// Whether the direction's decoder started mid-way.
    #[must_use]
    pub fn started_midway(&self) -> bool {
        self.started_midway
    }

    /// Feeds one record. `start` says whether the connection may have been followed from its
    /// start: `Start::Known` (accept/connect seen), `Start::IfSettings` (a first SETTINGS frame
    /// would say so), `Start::No` (the other direction started mid-way).
    pub fn record(
        &mut self,
        rec: Record<'_>,
        start: Start,
        start_ns: u64,
        out: &mut Vec<FrameEvent>,
        stats: &mut Http2Stats,
    ) {
        match rec {
            Record::Frame { header, payload } => {
                if let Some(p) = self.frame.take() {
                    // The rest of the previous frame was not captured.
                    self.complete(&Partial { cut: true, ..p }, out, stats);
                }
                if self.decoder.is_none() {
                    let settings = header.kind == SETTINGS && header.flags & FLAG_ACK == 0;
                    let fresh = match start {
                        Start::Known => true,
                        Start::IfSettings => settings,
                        Start::No => false,
                    };
                    self.started_midway = !fresh || self.lost_before_start;
                    self.decoder = Some(if self.started_midway {
                        Decoder::midway()
                    } else {
                        Decoder::new()
                    });
                }
                let mut need = need(&header);
                if header.kind == CONTINUATION {
                    // The block and the frame in progress share the bound.
                    need = need.min(MAX_BLOCK - self.block.as_ref().map_or(0, |b| b.bytes.len()));
                }
                let got = payload[..payload.len().min(need)].to_vec();
                let p = Partial {
                    header,
                    need,
                    got,
                    cut: false,
                    start_ns,
                };
                if p.got.len() >= need {
                    self.complete(&p, out, stats);
                } else {
                    self.frame = Some(p);
                }
            }
            Record::Cont { offset, payload } => {
                // Without a frame in progress (its header was in a lost event): nothing to add to.
                let Some(mut p) = self.frame.take() else {
                    return;
                };
                let offset = offset as usize;
                if offset > p.got.len() {
                    p.cut = true;
                    self.complete(&p, out, stats);
                    return;
                }
                let skip = p.got.len() - offset;
                let room = p.need - p.got.len();
                let add = payload.get(skip..).unwrap_or_default();
                p.got.extend_from_slice(&add[..add.len().min(room)]);
                if p.got.len() >= p.need {
                    self.complete(&p, out, stats);
                } else {
                    self.frame = Some(p);
                }
            }
            Record::Lost => self.lost(out, stats),
        }
    }

    /// Frames of this direction were lost here: what is in progress is decoded as far as it
    /// goes, and the dynamic table is unknown from now on.
    pub fn lost(&mut self, out: &mut Vec<FrameEvent>, stats: &mut Http2Stats) {
        if let Some(p) = self.frame.take() {
            self.complete(&Partial { cut: true, ..p }, out, stats);
        }
        if let Some(b) = self.block.take() {
            self.finish_block(Block { cut: true, ..b }, out);
        }
        match &mut self.decoder {
            Some(d) => d.desync(),
            // The decoder will start without the table.
            None => self.lost_before_start = true,
        }
    }

    /// Handles a frame whose needed payload is in (or will not come: `p.cut`).
    fn complete(&mut self, p: &Partial, out: &mut Vec<FrameEvent>, stats: &mut Http2Stats) {
        let h = p.header;
        if h.kind != CONTINUATION
            && let Some(b) = self.block.take()
        {
            // A block's CONTINUATION frames must follow it: they were lost.
            self.finish_block(Block { cut: true, ..b }, out);
        }
        let end_stream = h.flags & FLAG_END_STREAM != 0;
        let len = h.len as usize;
        match h.kind {
            HEADERS => {
                let mut start = 0;
                let mut end = len;
                if h.flags & FLAG_PADDED != 0 {
                    start = 1;
                    end = end.saturating_sub(p.got.first().map_or(len, |pad| usize::from(*pad)));
                }
                if h.flags & FLAG_PRIORITY != 0 {
                    start += 5;
                }
                if len > MAX_BLOCK {
                    stats.oversized_blocks += 1;
                }
                let have = p.got.len();
                let bytes = p
                    .got
                    .get(start.min(have)..end.min(have))
                    .unwrap_or_default();
                let b = Block {
                    stream: h.stream,
                    end_stream,
                    bytes: bytes.to_vec(),
                    cut: p.cut || have < end,
                    start_ns: p.start_ns,
                };
                if h.flags & FLAG_END_HEADERS != 0 || b.cut {
                    self.finish_block(b, out);
                } else {
                    self.block = Some(b);
                }
            }
            CONTINUATION => match self.block.take() {
                Some(mut b) if b.stream == h.stream => {
                    let room = MAX_BLOCK - b.bytes.len();
                    let have = p.got.len().min(len);
                    if len > room {
                        stats.oversized_blocks += 1;
                    }
                    b.bytes.extend_from_slice(&p.got[..have.min(room)]);
                    b.cut |= p.cut || have < len || len > room;
                    if h.flags & FLAG_END_HEADERS != 0 || b.cut {
                        self.finish_block(b, out);
                    } else {
                        self.block = Some(b);
                    }
                }
                Some(b) => self.finish_block(Block { cut: true, ..b }, out),
                // A PUSH_PROMISE's (not captured: the decoder is already out of step), or
                // one whose block was lost.
                None => {}
            },
            PUSH_PROMISE if len > 0 => {
                // Its header block is not captured, yet it changes the dynamic table.
                if let Some(d) = &mut self.decoder {
                    d.desync();
                }
            }
            DATA => {
                let (start, pad) = if h.flags & FLAG_PADDED != 0 {
                    (1, p.got.first().map_or(0, |pad| usize::from(*pad)))
                } else {
                    (0, 0)
                };
                out.push(FrameEvent::Data {
                    stream: h.stream,
                    len: len.saturating_sub(start + pad) as u64,
                    end_stream,
                    prefix: Prefix::of(p.got.get(start..).unwrap_or_default()),
                });
            }
            RST_STREAM => out.push(FrameEvent::Reset {
                stream: h.stream,
                code: be32(&p.got),
            }),
            GOAWAY => out.push(FrameEvent::GoAway {
                last: be32(&p.got).map(|l| l & 0x7fff_ffff),
            }),
            _ => {}
        }
    }

    /// Decodes a header block; a cut one, or one the decoder refuses, leaves the decoder
    /// desynchronised.
    fn finish_block(&mut self, b: Block, out: &mut Vec<FrameEvent>) {
        let decoder = self.decoder.get_or_insert_with(Decoder::midway);
        let bytes = Bytes::from(b.bytes);
        let mut fields = Vec::new();
        // A block the decoder refuses desynchronises it (and is counted by it).
        let refused = decoder.decode(&bytes, |f| fields.push(f)).is_err();
        if b.cut && !refused {
            decoder.desync();
        }
        out.push(FrameEvent::Headers {
            stream: b.stream,
            end_stream: b.end_stream,
            fields,
            cut: b.cut,
            start_ns: b.start_ns,
        });
    }
}
