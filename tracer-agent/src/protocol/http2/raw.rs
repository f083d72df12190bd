//! HTTP/2 frames walked in user space, for the events of HTTP/2 sockets whose frames the kernel
//! could not walk (`FLAG_H2_RAW`: a kernel where the walk did not load, or a tail call that
//! failed). Such an event carries the bytes
//! the syscall moved as far as the capture size (then `gap` bytes that were not captured); this
//! walk turns them into the records the kernel's walk writes (`tracer_common::h2`), by the same
//! rules (`h2::COPY_OF`), so everything after it is shared.
//!
//! What it cannot do that the kernel can: see a frame header past the captured prefix. The
//! payload of a frame may run into the gap (its length is known), but a header there loses the
//! boundaries (a `REC_LOST` record) until an event starts with a plausible frame header. A gRPC
//! response whose messages exceed the capture size then loses its trailers; the kernel's walk
//! does not.

use tracer_common::h2::{
    COPY_OF, FRAME_HEADER_LEN, FrameHeader, PREFACE, REC_CONT, REC_FRAME, REC_LOST,
};

/// One direction of a connection, between two events.
#[derive(Clone, Debug, Default)]
pub struct RawWalker {
    /// Payload bytes of the current frame still to come, and how many of those are reported.
    left: u64,
    copy: u64,
    /// Where in the current frame's payload the next byte belongs.
    offset: u64,
    /// A frame header cut by the end of an event.
    part: [u8; FRAME_HEADER_LEN],
    part_len: usize,
    /// The boundaries are lost.
    lost: bool,
}

/// What one walk produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    /// The boundaries were lost in this event (a header in the uncaptured bytes, or one that is
    /// not plausible).
    pub lost_boundaries: bool,
}

impl RawWalker {
    /// Appends to `out` the records of one event: `data` captured, then `gap` bytes that were
    /// not.
    pub fn walk(&mut self, data: &[u8], gap: u64, out: &mut Vec<u8>) -> Walked {
        let total = data.len() as u64 + gap;
        let captured = data.len() as u64;
        let mut walked = Walked::default();
        if self.lost {
            match data.first_chunk::<FRAME_HEADER_LEN>() {
                Some(h) if FrameHeader::parse(h).is_plausible() || is_preface(h) => {
                    *self = Self::default();
                }
                _ => return walked,
            }
        }
        let mut pos = 0u64;
        let mut missed = false;
        while pos < total {
            if self.part_len > 0 || (self.left == 0 && total - pos < FRAME_HEADER_LEN as u64) {
                // A frame header cut by the end of an event.
                let n = (FRAME_HEADER_LEN - self.part_len)
                    .min(index((total - pos).min(FRAME_HEADER_LEN as u64)));
                if pos + n as u64 > captured {
                    self.lose(&mut walked);
                    break;
                }
                let at = index(pos);
                self.part[self.part_len..self.part_len + n].copy_from_slice(&data[at..at + n]);
                self.part_len += n;
                pos += n as u64;
                if self.part_len < FRAME_HEADER_LEN {
                    break;
                }
                self.part_len = 0;
                let header = self.part;
                if !self.on_header(&header, data, total, &mut pos, &mut missed, out) {
                    self.lose(&mut walked);
                    break;
                }
            } else if self.left > 0 {
                // The rest of a frame that started earlier.
                let take = self.left.min(total - pos);
                let wanted = self.copy.min(take);
                if wanted > 0 {
                    let c = wanted.min(captured.saturating_sub(pos));
                    if c > 0 {
                        let at = index(pos);
                        record(out, REC_CONT, c, self.offset);
                        out.extend_from_slice(&data[at..at + index(c)]);
                    }
                    missed |= c < wanted;
                    self.copy -= wanted;
                }
                self.left -= take;
                self.offset += take;
                pos += take;
            } else {
                if pos + FRAME_HEADER_LEN as u64 > captured {
                    self.lose(&mut walked);
                    break;
                }
                let at = index(pos);
                let mut header = [0u8; FRAME_HEADER_LEN];
                header.copy_from_slice(&data[at..at + FRAME_HEADER_LEN]);
                pos += FRAME_HEADER_LEN as u64;
                if !self.on_header(&header, data, total, &mut pos, &mut missed, out) {
                    self.lose(&mut walked);
                    break;
                }
            }
        }
        if missed || walked.lost_boundaries {
            record(out, REC_LOST, 0, 0);
        }
        walked
    }

    fn lose(&mut self, walked: &mut Walked) {
        *self = Self {
            lost: true,
            ..Self::default()
        };
        walked.lost_boundaries = true;
    }

    /// A frame header was just read, up to `pos`: records it and what `data` holds of its
    /// payload. False when it is not plausible.
    fn on_header(
        &mut self,
        header: &[u8; FRAME_HEADER_LEN],
        data: &[u8],
        total: u64,
        pos: &mut u64,
        missed: &mut bool,
        out: &mut Vec<u8>,
    ) -> bool {
        if is_preface(header) {
            let rest = (PREFACE.len() - FRAME_HEADER_LEN) as u64;
            let take = rest.min(total - *pos);
            self.left = rest - take;
            self.copy = 0;
            *pos += take;
            return true;
        }
        let h = FrameHeader::parse(header);
        if !h.is_plausible() {
            return false;
        }
        let len = u64::from(h.len);
        let want = len.min(u64::from(COPY_OF[usize::from(h.kind & 15)]));
        let take = len.min(total - *pos);
        let first = want.min(take);
        let c = first.min((data.len() as u64).saturating_sub(*pos));
        record(out, REC_FRAME, c, 0);
        out.extend_from_slice(header);
        let at = index(*pos);
        out.extend_from_slice(&data[at..at + index(c)]);
        *missed |= c < first;
        self.left = len - take;
        self.copy = want - first;
        self.offset = take;
        *pos += take;
        true
    }
}

/// A position or length within the captured bytes (below their length, a `usize`) as an index.
fn index(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn is_preface(header: &[u8; FRAME_HEADER_LEN]) -> bool {
    header[..] == PREFACE[..FRAME_HEADER_LEN]
}

/// A record header (`h2::RecordHeader`, little-endian).
fn record(out: &mut Vec<u8>, kind: u8, len: u64, offset: u64) {
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use tracer_common::h2::{DATA, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, SETTINGS};

    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The records as (kind, len, offset, frame header type or 0xff, payload).
    fn parse(mut r: &[u8]) -> Vec<(u8, u16, u32, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while r.len() >= 8 {
            let kind = r[0];
            let len = u16::from_le_bytes([r[2], r[3]]);
            let offset = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            r = &r[8..];
            let ty = if kind == REC_FRAME {
                let t = r[3];
                r = &r[FRAME_HEADER_LEN..];
                t
            } else {
                0xff
            };
            let (payload, rest) = r.split_at(usize::from(len));
            out.push((kind, len, offset, ty, payload.to_vec()));
            r = rest;
        }
        assert!(r.is_empty(), "trailing bytes");
        out
    }

    #[test]
    fn whole_frames_and_the_preface() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[0; 6]));
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, b"hdrs"));
        bytes.extend(frame(DATA, FLAG_END_STREAM, 1, b"\0\0\0\0\x03abc"));
        let mut w = RawWalker::default();
        let mut out = Vec::new();
        assert!(!w.walk(&bytes, 0, &mut out).lost_boundaries);
        let r = parse(&out);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].0, r[0].3, r[0].1), (REC_FRAME, SETTINGS, 0));
        assert_eq!((r[1].3, r[1].4.as_slice()), (HEADERS, &b"hdrs"[..]));
        assert_eq!((r[2].3, r[2].4.as_slice()), (DATA, &b"\0\0\0\0\x03"[..]));
    }

    #[test]
    fn frames_and_headers_split_across_events_and_a_payload_in_the_gap() {
        let mut bytes = frame(HEADERS, FLAG_END_HEADERS, 1, b"0123456789");
        bytes.extend(frame(DATA, 0, 1, &[7u8; 100]));
        bytes.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            b"trailers",
        ));
        // Event 1: the first HEADERS cut in its payload; event 2: its rest and 4 bytes of the
        // DATA header; event 3: the DATA header's rest, 20 captured bytes of its payload, the
        // rest of it uncaptured; event 4: the trailers.
        let cuts = [14, 19 + 4, 19 + 9 + 20, bytes.len()];
        let mut w = RawWalker::default();
        let mut out = Vec::new();
        let mut start = 0;
        for (i, end) in cuts.into_iter().enumerate() {
            let chunk = &bytes[start..end];
            let (data, gap) = if i == 2 {
                (&chunk[..chunk.len()], 80)
            } else {
                (chunk, 0)
            };
            let end = if i == 2 { end + 80 } else { end };
            assert!(!w.walk(data, gap, &mut out).lost_boundaries, "event {i}");
            start = end;
        }
        let r = parse(&out);
        let kinds: Vec<(u8, u8, u16, u32)> = r.iter().map(|x| (x.0, x.3, x.1, x.2)).collect();
        assert_eq!(
            kinds,
            [
                (REC_FRAME, HEADERS, 5, 0),
                (REC_CONT, 0xff, 5, 5),
                (REC_FRAME, DATA, 5, 0),
                (REC_FRAME, HEADERS, 8, 0),
            ]
        );
        assert_eq!(r[1].4, b"56789");
    }

    #[test]
    fn a_header_in_the_gap_loses_the_boundaries_until_a_plausible_start() {
        let mut bytes = frame(DATA, 0, 1, &[1u8; 30]);
        bytes.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            b"trailers",
        ));
        let mut w = RawWalker::default();
        let mut out = Vec::new();
        // Only the first 20 bytes captured: the HEADERS header lies in the gap.
        let gap = (bytes.len() - 20) as u64;
        assert!(w.walk(&bytes[..20], gap, &mut out).lost_boundaries);
        let r = parse(&out);
        assert_eq!(r.last().unwrap().0, REC_LOST);
        // An event that does not start with a plausible header reports nothing.
        out.clear();
        assert!(
            !w.walk(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 0, &mut out)
                .lost_boundaries
        );
        assert!(out.is_empty());
        // One that does picks up again.
        let next = frame(HEADERS, FLAG_END_HEADERS, 3, b"h");
        assert!(!w.walk(&next, 0, &mut out).lost_boundaries);
        assert_eq!(parse(&out)[0].3, HEADERS);
    }

    #[test]
    fn an_implausible_header_is_a_loss() {
        let mut w = RawWalker::default();
        let mut out = Vec::new();
        assert!(
            w.walk(b"GET / HTTP/1.1\r\n\r\n", 0, &mut out)
                .lost_boundaries
        );
        assert_eq!(parse(&out), [(REC_LOST, 0, 0, 0xff, vec![])]);
    }
}
