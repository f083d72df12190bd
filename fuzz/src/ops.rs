//! A fuzz input read as a sequence of connection events: data in either direction (with a
//! capture gap and a tail, as the kernel reports a partly captured syscall), a new connection on
//! a descriptor, a close, an idle sweep. [`encode`] writes the same format, for the seeds.
//!
//! Each event starts with a control byte: bits 0-1 pick one of four descriptors, bits 2-4 the
//! kind, bits 5-7 (data) how early its syscall began or (fill) the direction. Data is followed by its length (one byte, or two when the first has its top bit set)
//! and its bytes; a fill (a pattern repeated, to reach the size bounds with a short input) by a
//! count, a pattern length and the pattern; a gap by its size and the tail's length and bytes.
//! Whatever is missing at the end of the input is read as zeros, so every input decodes.

use crate::protocol::Direction;

/// Descriptors (and so connections) a fuzz input can use.
pub const FDS: u8 = 4;
/// Largest chunk a fill event makes: the kernel never hands over more than its capture size in
/// one event, and this is above the agent's largest.
pub const MAX_FILL: usize = 32 * 1024;
/// The unit of `Op::Data::early`.
pub const BACKDATE_NS: u64 = 400;
/// Longest tail the kernel sends with a partly captured syscall (`tracer_common::TAIL_LEN`).
pub const MAX_TAIL: usize = tracer_common::TAIL_LEN;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Data {
        fd: u8,
        dir: Direction,
        /// How long before the event's turn a write began, in steps of [`BACKDATE_NS`]: events
        /// are reported in the order syscalls return, so a write may have begun before a read
        /// reported ahead of it returned. (A read's data is timed when it returns.)
        early: u8,
        data: Vec<u8>,
        /// Bytes the syscall moved after `data` that were not captured.
        gap: u64,
        /// The last bytes of the syscall's buffer (only with a gap).
        tail: Vec<u8>,
    },
    Open {
        fd: u8,
    },
    Close {
        fd: u8,
    },
    /// Every connection idle for a while is flushed.
    Sweep,
}

const DATA_IN: u8 = 0;
const DATA_OUT: u8 = 1;
const GAP_IN: u8 = 2;
const GAP_OUT: u8 = 3;
const FILL: u8 = 4;
const OPEN: u8 = 5;
const CLOSE: u8 = 6;
const SWEEP: u8 = 7;

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    fn len(&mut self) -> usize {
        let first = self.byte();
        if first & 0x80 == 0 {
            usize::from(first)
        } else {
            (usize::from(first & 0x7f) << 8) | usize::from(self.byte())
        }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        taken
    }
}

fn direction(kind: u8) -> Direction {
    if kind & 1 == 0 {
        Direction::Ingress
    } else {
        Direction::Egress
    }
}

/// The events of a fuzz input, in order.
#[must_use]
pub fn decode(input: &[u8]) -> Vec<Op> {
    let mut r = Reader { rest: input };
    let mut ops = Vec::new();
    while !r.rest.is_empty() {
        let control = r.byte();
        let fd = control & (FDS - 1);
        let kind = (control >> 2) & 7;
        ops.push(match kind {
            DATA_IN | DATA_OUT => {
                let n = r.len();
                Op::Data {
                    fd,
                    dir: direction(kind),
                    early: control >> 5,
                    data: r.bytes(n).to_vec(),
                    gap: 0,
                    tail: Vec::new(),
                }
            }
            GAP_IN | GAP_OUT => {
                let n = r.len();
                let data = r.bytes(n).to_vec();
                // Small gaps and large ones alike: the size is squared.
                let g = u64::from(r.byte());
                let gap = 1 + g * g * 4;
                let t = usize::from(r.byte()) % (MAX_TAIL + 1);
                Op::Data {
                    fd,
                    dir: direction(kind),
                    early: control >> 5,
                    data,
                    gap,
                    tail: r.bytes(t).to_vec(),
                }
            }
            FILL => {
                let dir = direction(control >> 5);
                let count = r.len();
                let n = usize::from(r.byte()).max(1);
                let pattern = r.bytes(n);
                let mut data = Vec::new();
                if !pattern.is_empty() {
                    while data.len() < MAX_FILL.min(count * pattern.len()) {
                        data.extend_from_slice(pattern);
                    }
                    data.truncate(MAX_FILL);
                }
                Op::Data {
                    fd,
                    dir,
                    early: 0,
                    data,
                    gap: 0,
                    tail: Vec::new(),
                }
            }
            OPEN => Op::Open { fd },
            CLOSE => Op::Close { fd },
            _ => Op::Sweep,
        });
    }
    ops
}

fn push_len(out: &mut Vec<u8>, n: usize) {
    assert!(
        n < 0x8000,
        "a data event of {n} bytes does not fit the format"
    );
    if n < 0x80 {
        out.push(n as u8);
    } else {
        out.push(0x80 | (n >> 8) as u8);
        out.push(n as u8);
    }
}

/// The fuzz input for `ops` (a gap is rounded to the nearest size the format can say).
#[must_use]
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Data {
                fd,
                dir,
                early,
                data,
                gap,
                tail,
            } => {
                let kind = match (dir, *gap > 0) {
                    (Direction::Ingress, false) => DATA_IN,
                    (Direction::Egress, false) => DATA_OUT,
                    (Direction::Ingress, true) => GAP_IN,
                    (Direction::Egress, true) => GAP_OUT,
                };
                assert!(*early < 8, "early is three bits");
                out.push(fd | (kind << 2) | (early << 5));
                push_len(&mut out, data.len());
                out.extend_from_slice(data);
                if *gap > 0 {
                    // The nearest size the format can say.
                    let g = (((*gap - 1) / 4) as f64).sqrt().round().min(255.0) as u8;
                    out.push(g);
                    let t = tail.len().min(MAX_TAIL);
                    out.push(t as u8);
                    out.extend_from_slice(&tail[tail.len() - t..]);
                }
            }
            Op::Open { fd } => out.push(fd | (OPEN << 2)),
            Op::Close { fd } => out.push(fd | (CLOSE << 2)),
            Op::Sweep => out.push(SWEEP << 2),
        }
    }
    out
}
