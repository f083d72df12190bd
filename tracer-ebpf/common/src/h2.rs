//! HTTP/2 as the kernel and the agent both see it (RFC 9113): how a connection is recognised,
//! and the record format in which the kernel hands over the frames of an HTTP/2 socket.
//!
//! A data event of an HTTP/2 socket (`FLAG_H2_FRAMES`) does not carry the bytes the syscall
//! moved but a sequence of records, each starting with an 8-byte [`RecordHeader`]:
//! - [`REC_FRAME`]: a frame starts here. The 9-byte frame header as it was sent follows the
//!   record header, then `len` bytes of the frame's payload, from payload offset `offset`
//!   (always 0 for this kind). HEADERS and CONTINUATION payloads are copied as far as the
//!   records of one event allow ([`MAX_RECORDS`]); of a DATA frame, at most its first [`DATA_PREFIX`] payload bytes (the
//!   gRPC message prefix: compressed flag and length); of `RST_STREAM`, GOAWAY and `WINDOW_UPDATE`,
//!   at most [`SMALL_PAYLOAD`] bytes (error code, last stream id); of other frames, nothing.
//! - [`REC_CONT`]: `len` more payload bytes of this direction's frame in progress (whose header
//!   came in an earlier record, of this event or an earlier one), from payload offset `offset`.
//!   Bytes of a frame that are not copied (the rest of a DATA payload, a HEADERS payload past
//!   the capture size) are simply absent: the frame header gives the length, the offsets say
//!   what was copied.
//! - [`REC_LOST`] (always the event's last record): frames or parts of frames that matter were
//!   not reported: the kernel lost this direction's frame boundaries (more frames in one syscall
//!   than it walks, a frame header that is not plausible; it then looks for a plausible frame
//!   header at the start of later syscalls and reports nothing until one comes), or the capture
//!   size left no room for them. A header block may have been missed or cut: the HPACK decoder
//!   of this direction must consider its dynamic table unknown, and a frame whose payload was
//!   being reported is over.
//!
//! A HEADERS or CONTINUATION frame is complete for the agent when the bytes of its records reach
//! the frame's length; a frame header of the same direction arriving before that means the rest
//! was not captured.
//!
//! A frame header split between two syscalls (or two iovec elements) is reassembled by the
//! kernel: a record always carries a whole frame header.

// The kernel programs call these: there, everything must be inlined.
#![expect(clippy::inline_always, reason = "called by the kernel programs")]

/// The client connection preface (RFC 9113 §3.4); a SETTINGS frame follows it.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Frame flags.
pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 9;
/// The largest frame payload the kernel takes for plausible (`SETTINGS_MAX_FRAME_SIZE` may go to
/// 2^24 - 1, but no implementation this agent meets sends frames above 1 MiB).
pub const MAX_PLAUSIBLE_FRAME: u32 = 1 << 20;
/// Payload bytes of a DATA frame the kernel copies: the gRPC message prefix.
pub const DATA_PREFIX: u32 = 5;
/// Payload bytes of `RST_STREAM`, GOAWAY and `WINDOW_UPDATE` the kernel copies.
pub const SMALL_PAYLOAD: u32 = 8;

/// Payload bytes of each frame type (by type, below 16) that are reported: `u32::MAX` for all
/// of it (header blocks), [`DATA_PREFIX`] of DATA, [`SMALL_PAYLOAD`] of `RST_STREAM`, GOAWAY and
/// `WINDOW_UPDATE`, nothing of the rest. The kernel's walk and the agent's (for raw events) both
/// follow it.
pub const COPY_OF: [u32; 16] = {
    let mut t = [0u32; 16];
    t[DATA as usize] = DATA_PREFIX;
    t[HEADERS as usize] = u32::MAX;
    t[CONTINUATION as usize] = u32::MAX;
    t[PUSH_PROMISE as usize] = u32::MAX;
    t[RST_STREAM as usize] = SMALL_PAYLOAD;
    t[GOAWAY as usize] = SMALL_PAYLOAD;
    t[WINDOW_UPDATE as usize] = SMALL_PAYLOAD;
    t
};

/// Most bytes of records one event carries, whatever `--capture-size` says: a syscall may move
/// dozens of frames (50 concurrent streams' responses in one write), each costing a record.
/// Within what the kernel's event buffer can send (`2 * MAX_CAPTURE`).
pub const MAX_RECORDS: usize = 2 * crate::MAX_CAPTURE;

/// Record kinds.
pub const REC_FRAME: u8 = 1;
pub const REC_CONT: u8 = 2;
pub const REC_LOST: u8 = 3;

/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 8;

/// The header of every record (see the module documentation); little-endian fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u8,
    pub pad: u8,
    /// Payload bytes in this record (after the frame header, for `REC_FRAME`).
    pub len: u16,
    /// Where in the frame's payload those bytes start.
    pub offset: u32,
}
const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_LEN);

/// A frame header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    #[inline(always)]
    #[must_use]
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether this can be a frame of a well-behaved peer: a known type, a length below
    /// [`MAX_PLAUSIBLE_FRAME`] and the stream rules of RFC 9113 §6 (connection frames on
    /// stream 0, stream frames elsewhere), no reserved bit. The kernel walks frames only while
    /// this holds.
    #[inline(always)]
    #[must_use]
    pub fn is_plausible(&self) -> bool {
        if self.len > MAX_PLAUSIBLE_FRAME {
            return false;
        }
        match self.kind {
            DATA | HEADERS | PRIORITY | RST_STREAM | PUSH_PROMISE | CONTINUATION => {
                self.stream != 0
            }
            SETTINGS => self.stream == 0 && self.len.is_multiple_of(6),
            PING => self.stream == 0 && self.len == 8,
            GOAWAY => self.stream == 0 && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => false,
        }
    }
}

/// Whether the first eight bytes a socket moved start the client preface.
#[inline(always)]
#[must_use]
pub fn is_preface_start(b: &[u8; 8]) -> bool {
    u64::from_le_bytes(*b) == u64::from_le_bytes(*b"PRI * HT")
}

/// Whether the first bytes a socket moved can start a server's first frame (RFC 9113 §3.4: a
/// SETTINGS frame, not an ACK, on stream 0): how a server that writes before it has read the
/// client's preface (grpc-go does) is recognised. Only for sockets accept/connect reported, whose
/// first payload this is.
#[inline(always)]
#[must_use]
pub fn is_server_preface_start(b: &[u8; FRAME_HEADER_LEN]) -> bool {
    let h = FrameHeader::parse(b);
    h.kind == SETTINGS
        && h.flags == 0
        && h.stream == 0
        && h.len.is_multiple_of(6)
        && h.len <= 6 * 16
        && b[5] & 0x80 == 0
}

/// Whether the first bytes of a syscall on a socket older than the agent start a HEADERS frame
/// that opens or answers a request: how a busy HTTP/2 connection is picked up mid-way. A stream
/// frame with only the HEADERS flags, a length that fits the syscall, an odd stream id
/// (client-initiated) and no reserved bit.
#[inline(always)]
#[must_use]
pub fn is_midway_headers(b: &[u8; FRAME_HEADER_LEN], moved: u64) -> bool {
    let h = FrameHeader::parse(b);
    h.kind == HEADERS
        && h.flags & !(FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY) == 0
        && h.stream & 1 == 1
        && b[5] & 0x80 == 0
        && h.len > 0
        && u64::from(h.len) + FRAME_HEADER_LEN as u64 <= moved
}

/// Whether the first bytes of a syscall on a socket older than the agent start a frame that
/// only an HTTP/2 connection carries: a PING (8 bytes, stream 0), a SETTINGS acknowledgement
/// (empty, stream 0) or a `WINDOW_UPDATE` (4 bytes), whole within the syscall, no reserved bit.
/// How a connection is picked up when the first read the agent sees has the peer's flow control
/// or liveness frames ahead of an answer: grpc-go acknowledges a request's DATA with a
/// `WINDOW_UPDATE` and a PING, and a read that returns after the answer came holds all of it.
/// Each of these headers is fixed in all but at most 32 bits, so other protocols do not match
/// by chance.
#[inline(always)]
#[must_use]
pub fn is_midway_control(b: &[u8; FRAME_HEADER_LEN], moved: u64) -> bool {
    let h = FrameHeader::parse(b);
    let shape = match h.kind {
        PING => h.len == 8 && h.stream == 0 && h.flags & !FLAG_ACK == 0,
        SETTINGS => h.len == 0 && h.stream == 0 && h.flags == FLAG_ACK,
        WINDOW_UPDATE => h.len == 4 && h.flags == 0,
        _ => false,
    };
    shape && b[5] & 0x80 == 0 && u64::from(h.len) + FRAME_HEADER_LEN as u64 <= moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
        let l = len.to_be_bytes();
        let s = stream.to_be_bytes();
        [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
    }

    #[test]
    fn recognises_prefaces_and_midway_headers() {
        let mut first = [0u8; 8];
        first.copy_from_slice(&PREFACE[..8]);
        assert!(is_preface_start(&first));
        assert!(!is_preface_start(b"GET / HT"));
        assert!(is_server_preface_start(&header(18, SETTINGS, 0, 0)));
        assert!(is_server_preface_start(&header(0, SETTINGS, 0, 0)));
        assert!(!is_server_preface_start(&header(0, SETTINGS, FLAG_ACK, 0)));
        assert!(!is_server_preface_start(&header(7, SETTINGS, 0, 0)));
        assert!(!is_server_preface_start(b"HTTP/1.1 "));
        assert!(is_midway_headers(
            &header(40, HEADERS, FLAG_END_HEADERS, 7),
            49
        ));
        assert!(!is_midway_headers(
            &header(40, HEADERS, FLAG_END_HEADERS, 7),
            48
        ));
        assert!(!is_midway_headers(
            &header(40, HEADERS, FLAG_END_HEADERS, 8),
            100
        ));
        assert!(!is_midway_headers(&header(40, DATA, 0, 7), 100));
        assert!(!is_midway_headers(b"GET / HTT", 100));
    }

    #[test]
    fn recognises_connection_frames_of_a_connection_picked_up_midway() {
        // grpc-go's answer to a request's DATA, then the answer itself, in one read.
        assert!(is_midway_control(&header(4, WINDOW_UPDATE, 0, 0), 30 + 94));
        assert!(is_midway_control(&header(4, WINDOW_UPDATE, 0, 5), 13));
        assert!(is_midway_control(&header(8, PING, 0, 0), 17));
        assert!(is_midway_control(&header(8, PING, FLAG_ACK, 0), 17));
        assert!(is_midway_control(&header(0, SETTINGS, FLAG_ACK, 0), 9));
        // Not whole within the syscall, the wrong length, stream or flags, a reserved bit.
        assert!(!is_midway_control(&header(8, PING, 0, 0), 16));
        assert!(!is_midway_control(&header(4, WINDOW_UPDATE, 0, 0), 12));
        assert!(!is_midway_control(&header(9, PING, 0, 0), 100));
        assert!(!is_midway_control(&header(8, PING, 0, 1), 100));
        assert!(!is_midway_control(&header(8, PING, 2, 0), 100));
        assert!(!is_midway_control(&header(5, WINDOW_UPDATE, 0, 0), 100));
        assert!(!is_midway_control(&header(4, WINDOW_UPDATE, 1, 0), 100));
        assert!(!is_midway_control(
            &header(4, WINDOW_UPDATE, 0, 0x8000_0001),
            100
        ));
        assert!(!is_midway_control(&header(6, SETTINGS, FLAG_ACK, 0), 100));
        assert!(!is_midway_control(&header(0, SETTINGS, 0, 0), 100));
        // Frames that do not say HTTP/2 on their own, and other protocols.
        assert!(!is_midway_control(&header(4, RST_STREAM, 0, 1), 100));
        assert!(!is_midway_control(&header(8, DATA, 0, 1), 100));
        assert!(!is_midway_control(b"HTTP/1.1 ", 100));
        assert!(!is_midway_control(&[0; 9], 100));
    }

    #[test]
    fn plausible_frames() {
        let p = |len, kind, flags, stream| {
            FrameHeader::parse(&header(len, kind, flags, stream)).is_plausible()
        };
        assert!(p(5, DATA, 0, 1));
        assert!(!p(5, DATA, 0, 0));
        assert!(p(12, SETTINGS, 0, 0));
        assert!(!p(13, SETTINGS, 0, 0));
        assert!(p(8, PING, 0, 0));
        assert!(!p(8, PING, 0, 3));
        assert!(p(4, WINDOW_UPDATE, 0, 0));
        assert!(!p(5, 0x10, 0, 1));
        assert!(!p(MAX_PLAUSIBLE_FRAME + 1, DATA, 0, 1));
        let raw = header(20, HEADERS, 4, 0x8000_0003);
        assert_eq!(FrameHeader::parse(&raw).stream, 3);
    }
}
