//! gRPC messages in one direction of a stream, counted from the DATA frames' lengths and the
//! captured 5-byte message prefixes: a message starts where the previous one ended. When
//! messages start at places that were not captured (inside a frame: the kernel copies only a
//! frame's first bytes, and senders pack small messages into one frame), the count is marked
//! estimated: if the rest of the frame is a whole number of messages of the size of the frame's
//! first one (a stream's messages are often of one size), that many are counted and counting
//! goes on at the frame's end; else one is counted, and counting resumes at the next frame whose
//! first bytes are a plausible prefix.

use super::frames::Prefix;

#[derive(Clone, Copy, Debug, Default)]
pub struct Messages {
    pub count: u64,
    /// Data bytes seen so far.
    seen: u64,
    /// Where the next message starts, when known.
    next: Option<u64>,
    lost_track: bool,
    pub estimated: bool,
}

impl Messages {
    /// A DATA frame of `len` data bytes, whose first bytes are `prefix`.
    pub fn data(&mut self, len: u64, prefix: Prefix) {
        let end = self.seen + len;
        if len == 0 {
            return;
        }
        let plausible = prefix.grpc().filter(|(flag, _)| *flag <= 1);
        if self.lost_track && plausible.is_some() {
            self.lost_track = false;
            self.next = Some(self.seen);
        } else if !self.lost_track && self.next.is_none() {
            self.next = Some(0);
        }
        while let Some(at) = self.next
            && at < end
        {
            self.count += 1;
            let first = plausible.map(|(_, n)| 5 + u64::from(n));
            match first {
                Some(size) if at == self.seen => self.next = Some(at + size),
                Some(size) if (end - at).is_multiple_of(size) => {
                    // Packed after the frame's first message: assumed of its size.
                    self.estimated = true;
                    self.count += (end - at) / size - 1;
                    self.next = Some(end);
                }
                _ => {
                    self.estimated = true;
                    self.lost_track = true;
                    self.next = None;
                }
            }
        }
        self.seen = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(flag: u8, len: u32) -> Prefix {
        let l = len.to_be_bytes();
        Prefix {
            bytes: [flag, l[0], l[1], l[2], l[3]],
            len: 5,
        }
    }

    #[test]
    fn counts_messages_across_frames() {
        let mut m = Messages::default();
        // One message of 10 bytes in one frame, then one of 100 over two frames.
        m.data(15, prefix(0, 10));
        m.data(60, prefix(0, 100));
        m.data(45, prefix(7, 7));
        m.data(0, Prefix::default());
        assert_eq!((m.count, m.estimated), (2, false));
        // Two messages in one frame: the second's prefix was not captured, its size assumed.
        m.data(14, prefix(0, 2));
        assert_eq!((m.count, m.estimated), (4, true));
        m.data(6, prefix(1, 1));
        assert_eq!(m.count, 5);
        // Five messages of one size packed in a frame.
        m.data(60, prefix(0, 7));
        assert_eq!(m.count, 10);
        // A packed rest of another size: one more counted, and counting resumes at a frame that
        // starts with a prefix.
        m.data(20, prefix(0, 7));
        assert_eq!(m.count, 12);
        m.data(9, prefix(0xff, 0));
        assert_eq!(m.count, 12);
        m.data(6, prefix(0, 1));
        assert_eq!(m.count, 13);
    }
}
