//! Event numbering: each data event carries its socket's sequence number for its direction, so
//! a jump tells a connection's assembly that events were lost on the way (the ring buffer was
//! full). Shared by the HTTP/1 and HTTP/2 assembly, which handle a loss each their own way.

use super::Direction;

/// A jump in sequence numbers smaller than this, backwards, is two threads of one socket whose
/// events crossed; a larger one is a socket the kernel started counting again for.
const SEQ_REORDER: u32 = 64;

/// What is known of a connection's event numbering.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seq {
    /// The number each direction's next event should carry, once known.
    next: [Option<u32>; 2],
    /// Followed from the socket's first event (accept/connect seen, or a first event numbered
    /// 0): a direction not seen yet starts at 0.
    from_start: bool,
}

impl Seq {
    /// The socket was just opened (accept/connect): its events are numbered from 0.
    pub fn opened(&mut self) {
        self.from_start = true;
    }

    /// Whether the connection is followed from the socket's first event.
    #[must_use]
    pub fn followed_from_start(&self) -> bool {
        self.from_start
    }

    /// Checks `seq`, the sequence number of the next event in `dir`; returns how many events
    /// of that direction were lost before it.
    pub fn check(&mut self, dir: Direction, seq: u32) -> u64 {
        // A connection followed from its first event numbers both directions from 0.
        let from_start = self.from_start;
        let slot = &mut self.next[dir as usize];
        let expected = slot.or(from_start.then_some(0));
        let lost = match expected {
            Some(expected) => {
                let ahead = seq.wrapping_sub(expected);
                if ahead < u32::MAX / 2 {
                    u64::from(ahead)
                } else if expected.wrapping_sub(seq) <= SEQ_REORDER {
                    // Crossed with a later event of the same direction: already accounted for.
                    return 0;
                } else {
                    // The kernel started counting again (its entry for the socket was replaced).
                    0
                }
            }
            None => 0,
        };
        self.from_start |= seq == 0 && expected.is_none();
        *slot = Some(seq.wrapping_add(1));
        lost
    }
}
