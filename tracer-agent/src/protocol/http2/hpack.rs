//! HPACK (RFC 7541): decodes the header blocks of one HTTP/2 connection direction, tolerating a
//! connection seen mid-way.
//!
//! One [`Decoder`] per connection and direction follows the peer's dynamic table. The mid-way
//! rule: a decoder started with [`Decoder::midway`], or that lost a header block
//! ([`Decoder::desync`], or a decode error), knows only the entries inserted since. Index
//! positions count from the newest entry, so after K insertions the dynamic index 62 + i is
//! known for i < K, and unknown for i >= K: such a reference gives a [`Field`] whose name (and
//! value, for an indexed field) is `None`. A literal whose name is unknown still inserts its
//! entry (name unknown, value known) so that the positions stay right. The decoder is in sync
//! again ([`Decoder::is_synced`]) once the peer's table provably holds nothing older and no
//! entry of unknown name: after a size update to 0, or once newer entries under a known maximum
//! size have filled the table or evicted one another (the table module says how). A decoder may
//! say "unknown"; it never gives a wrong name or value for a conforming peer.
//!
//! Bounds: the dynamic table keeps at most [`CAP`] bytes (by HPACK's size accounting) whatever
//! size the peer announces; strings over [`MAX_STRING`] bytes and integers over `u32::MAX` are
//! errors; nothing is allocated before the bytes it stands for are in the block; the whole
//! decoder holds at most [`Decoder::MAX_FOOTPRINT`] (the cap, a queue's slots and its own size).
//! Names and values of plain literals share the block; a table entry holds a copy of its name
//! and value in one allocation (so that a table never keeps a block alive), which the fields
//! referring to it share.

#![allow(
    dead_code,
    reason = "used by the HTTP/2 exchange code (branch h-h2): remove once it is merged"
)]

mod huffman;
mod table;
#[cfg(test)]
mod tests;

use std::ops::AddAssign;

use bytes::Bytes;
use thiserror::Error;

use self::table::{DynamicTable, Events, Lookup, STATIC};
pub use self::{huffman::HuffmanError, table::CAP};

/// The longest string literal accepted, Huffman-coded or decoded.
pub const MAX_STRING: usize = 16 * 1024;

/// A decoded header field. `None` where the field refers to a dynamic-table entry the decoder
/// does not know (the connection was picked up mid-way, or a header block was lost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Why a header block could not be decoded to its end.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("HPACK header block ends inside {0}")]
    Truncated(&'static str),
    #[error("HPACK integer over 2^32 - 1 or longer than 5 continuation bytes")]
    IntegerOverflow,
    #[error("HPACK string of {len} bytes, over the {MAX_STRING}-byte limit")]
    StringTooLong { len: usize },
    #[error("HPACK Huffman-coded string: {0}")]
    Huffman(#[from] HuffmanError),
    #[error("HPACK index 0 (indexes start at 1)")]
    IndexZero,
    #[error("HPACK index {index} beyond the table's {entries} entries (61 static + dynamic)")]
    IndexOutOfRange { index: usize, entries: usize },
}

/// What a decoder counted since the last [`Decoder::take_stats`]; meant to be added to the
/// agent's `tracer_http2_hpack_*` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HpackStats {
    /// References to dynamic-table entries the decoder did not know (each gave a `None`).
    pub unknown_refs: u64,
    /// Times the decoder lost track of the table: [`Decoder::desync`] calls and decode errors.
    pub desyncs: u64,
    /// Times an unknown table became fully known again.
    pub resyncs: u64,
    /// Header blocks refused with a [`DecodeError`] (each also counts as a desync).
    pub errors: u64,
    /// Strings over [`MAX_STRING`] (each also an error).
    pub oversize_strings: u64,
    /// Dynamic table size updates over [`CAP`] (the table keeps to the cap).
    pub capped_size_updates: u64,
}

impl AddAssign for HpackStats {
    fn add_assign(&mut self, o: Self) {
        self.unknown_refs += o.unknown_refs;
        self.desyncs += o.desyncs;
        self.resyncs += o.resyncs;
        self.errors += o.errors;
        self.oversize_strings += o.oversize_strings;
        self.capped_size_updates += o.capped_size_updates;
    }
}

// The cap "plus O(1)": 64 KiB and 40 KiB of queue slots at most.
const _: () = assert!(Decoder::MAX_FOOTPRINT <= CAP + 41 * 1024);

/// The HPACK decoder of one connection direction.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    stats: HpackStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// For a connection followed from its start: the dynamic table starts empty and fully
    /// known.
    #[must_use]
    pub fn new() -> Self {
        Self {
            table: DynamicTable::known(),
            stats: HpackStats::default(),
        }
    }

    /// For a connection picked up mid-way: entries that existed before are unknown.
    #[must_use]
    pub fn midway() -> Self {
        Self {
            table: DynamicTable::midway(),
            stats: HpackStats::default(),
        }
    }

    /// A header block of this direction was lost or cut (kernel loss, capture limit): the
    /// entries it may have added are unknown from now on (the ones added later are known
    /// again, at their positions).
    pub fn desync(&mut self) {
        self.table.desync();
        self.stats.desyncs += 1;
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads concatenated,
    /// padding and priority already removed), calling `out` for each field in order. On an
    /// error the block's remaining fields are lost and the decoder desyncs itself; fields
    /// already emitted stay valid.
    ///
    /// # Errors
    /// The block is malformed: see [`DecodeError`].
    pub fn decode(&mut self, block: &Bytes, mut out: impl FnMut(Field)) -> Result<(), DecodeError> {
        let mut cursor = Cursor { block, pos: 0 };
        let result = self.fields(&mut cursor, &mut out);
        if let Err(e) = &result {
            self.stats.errors += 1;
            if matches!(e, DecodeError::StringTooLong { .. }) {
                self.stats.oversize_strings += 1;
            }
            self.desync();
        }
        result
    }

    /// Bytes this decoder holds (for the connection table's memory budget): at most
    /// [`Decoder::MAX_FOOTPRINT`].
    #[must_use]
    pub fn footprint(&self) -> usize {
        size_of::<Self>() + self.table.heap_bytes()
    }

    /// The most [`Decoder::footprint`] can be: its own size, the entries' memory (at most the
    /// cap) and the queue's free slots.
    pub const MAX_FOOTPRINT: usize =
        size_of::<Self>() + CAP + table::MAX_SLOTS * size_of::<table::Entry>();

    /// Whether every entry of the peer's dynamic table is known.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.table.is_known()
    }

    /// What was counted since the last call (the counters restart at zero).
    pub fn take_stats(&mut self) -> HpackStats {
        std::mem::take(&mut self.stats)
    }

    fn fields(
        &mut self,
        cur: &mut Cursor<'_>,
        out: &mut impl FnMut(Field),
    ) -> Result<(), DecodeError> {
        while let Some(first) = cur.peek() {
            if first & 0x80 != 0 {
                // Indexed header field (§6.1).
                let index = cur.integer(7)?;
                let (name, value) = self.lookup(index)?;
                out(Field { name, value });
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                self.literal(cur, 6, true, out)?;
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3). Accepted anywhere in a block: the peer's
                // own decoder may be stricter, but an observer gains nothing by refusing it.
                let max = cur.integer(5)?;
                let events = self.table.set_max(max);
                self.count(events);
            } else {
                // Literal without indexing (0000) or never indexed (0001) (§6.2.2, §6.2.3).
                self.literal(cur, 4, false, out)?;
            }
        }
        Ok(())
    }

    /// A literal header field whose representation has a `prefix`-bit name index.
    fn literal(
        &mut self,
        cur: &mut Cursor<'_>,
        prefix: u8,
        indexing: bool,
        out: &mut impl FnMut(Field),
    ) -> Result<(), DecodeError> {
        let name_index = cur.integer(prefix)?;
        let name = if name_index == 0 {
            Some(cur.string()?)
        } else {
            self.lookup(name_index)?.0
        };
        let value = cur.string()?;
        if indexing {
            let events = self.table.insert(name.as_deref(), &value);
            self.count(events);
        }
        out(Field {
            name,
            value: Some(value),
        });
        Ok(())
    }

    /// The name and value at `index` (§2.3.3).
    fn lookup(&mut self, index: usize) -> Result<(Option<Bytes>, Option<Bytes>), DecodeError> {
        if index == 0 {
            return Err(DecodeError::IndexZero);
        }
        if let Some(&(name, value)) = STATIC.get(index - 1) {
            return Ok((
                Some(Bytes::from_static(name)),
                Some(Bytes::from_static(value)),
            ));
        }
        match self.table.get(index - STATIC.len() - 1) {
            Lookup::Known(e) => Ok((e.name(), Some(e.value()))),
            Lookup::Unknown => {
                self.stats.unknown_refs += 1;
                Ok((None, None))
            }
            Lookup::Beyond => Err(DecodeError::IndexOutOfRange {
                index,
                entries: STATIC.len() + self.table.len(),
            }),
        }
    }

    fn count(&mut self, events: Events) {
        self.stats.capped_size_updates += u64::from(events.capped);
        self.stats.resyncs += u64::from(events.resynced);
    }
}

/// A position in a header block.
struct Cursor<'a> {
    block: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.block.get(self.pos).copied()
    }

    fn next(&mut self, inside: &'static str) -> Result<u8, DecodeError> {
        let b = self.peek().ok_or(DecodeError::Truncated(inside))?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with a `prefix`-bit prefix (§5.1), at most `u32::MAX`.
    fn integer(&mut self, prefix: u8) -> Result<usize, DecodeError> {
        const INSIDE: &str = "an integer";
        let mask = (1u8 << prefix) - 1;
        let first = self.next(INSIDE)? & mask;
        if first < mask {
            return Ok(usize::from(first));
        }
        let mut value = u64::from(mask);
        let mut shift = 0;
        loop {
            let b = self.next(INSIDE)?;
            value += u64::from(b & 0x7f) << shift;
            if value > u64::from(u32::MAX) {
                return Err(DecodeError::IntegerOverflow);
            }
            if b & 0x80 == 0 {
                return usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow);
            }
            shift += 7;
            if shift > 28 {
                return Err(DecodeError::IntegerOverflow);
            }
        }
    }

    /// A string literal (§5.2): a slice of the block, or the Huffman-decoded string.
    fn string(&mut self) -> Result<Bytes, DecodeError> {
        const INSIDE: &str = "a string";
        let huffman = self.peek().ok_or(DecodeError::Truncated(INSIDE))? & 0x80 != 0;
        let len = self.integer(7)?;
        if len > MAX_STRING {
            return Err(DecodeError::StringTooLong { len });
        }
        let end = self.pos + len;
        let Some(raw) = self.block.get(self.pos..end) else {
            return Err(DecodeError::Truncated(INSIDE));
        };
        let s = if huffman {
            Self::huffman(raw)?
        } else {
            self.block.slice(self.pos..end)
        };
        self.pos = end;
        Ok(s)
    }

    /// Decodes a Huffman-coded string into a `Bytes` of its own: a short one on the stack, then
    /// copied once.
    fn huffman(raw: &[u8]) -> Result<Bytes, DecodeError> {
        const ON_STACK: usize = 256;
        // At most 8 symbols per 5 bits (the shortest code).
        let most = raw.len() * 8 / 5;
        if most <= ON_STACK {
            let mut buf = [0u8; ON_STACK];
            let mut len = 0;
            huffman::decode(raw, |b| {
                if let Some(slot) = buf.get_mut(len) {
                    *slot = b;
                }
                len += 1;
            })?;
            return Ok(Bytes::copy_from_slice(&buf[..len.min(ON_STACK)]));
        }
        let mut decoded = Vec::with_capacity(most);
        huffman::decode(raw, |b| decoded.push(b))?;
        if decoded.len() > MAX_STRING {
            return Err(DecodeError::StringTooLong { len: decoded.len() });
        }
        // A `Bytes` made from a full `Vec` needs no second allocation and holds no slack.
        decoded.shrink_to_fit();
        Ok(Bytes::from(decoded))
    }
}
