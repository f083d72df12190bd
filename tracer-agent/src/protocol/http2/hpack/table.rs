//! The header tables (RFC 7541 §2.3): the static table (Appendix A) and one direction's dynamic
//! table as far as the decoder knows it.
//!
//! The dynamic table is held newest first. Index positions count from the newest entry, so the
//! entries inserted since the decoder was (re)synchronised keep their positions whatever came
//! before them; the older ones are unknown (`older_unknown`) until the peer's table provably
//! holds none of them: a size update that leaves no room for them (0 empties the table), an
//! eviction under a known maximum size (the peer evicts oldest first), or newer entries that
//! fill it.
//!
//! Sizes (32 + name + value, §4.1) are lower bounds when an entry's name is unknown, so this
//! table evicts at most what the peer's table evicts: the entries held are the peer's, newest
//! first, possibly followed by some the peer has already evicted (which a conforming peer never
//! refers to). With the peer's maximum size unknown (a connection picked up mid-way, a lost
//! block, a size over [`CAP`]) the table keeps at most [`DEFAULT_MAX`] bytes (or the last size
//! seen, at most [`CAP`]); what it drops then may still be in the peer's table and becomes
//! unknown, never wrong. The same holds for the memory budget: the entries' memory (their
//! slots, bytes and bookkeeping) stays within [`CAP`] even when many tiny entries fill a large
//! table, the oldest becoming unknown.

use std::collections::VecDeque;

use bytes::Bytes;

/// Per-entry overhead in the size of an entry (§4.1).
pub(super) const ENTRY_OVERHEAD: usize = 32;
/// The dynamic table's maximum size when nothing else was said: the initial
/// `SETTINGS_HEADER_TABLE_SIZE` of HTTP/2, which nearly every implementation keeps.
pub const DEFAULT_MAX: usize = 4096;
/// The most a decoder keeps, whatever size the peer announces.
pub const CAP: usize = 64 * 1024;

/// The static table (RFC 7541 Appendix A); index 1 is element 0.
pub(super) const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// A dynamic-table entry: its name and value in one allocation, shared by the fields that
/// refer to it.
#[derive(Debug)]
pub(super) struct Entry {
    /// The name (unless unknown), then the value.
    data: Bytes,
    /// The name's length, or [`NO_NAME`] when it is unknown (inserted by a literal whose name
    /// referred to an unknown entry).
    name_len: u32,
}

const NO_NAME: u32 = u32::MAX;

/// Heap bytes an entry's data costs beyond its length, an estimate: the allocator's header and
/// rounding, and `Bytes`' shared-ownership record.
const DATA_OVERHEAD: usize = 48;
/// The least memory an entry costs: its slot and the overhead of its data.
pub(super) const ENTRY_MEMORY: usize = size_of::<Entry>() + DATA_OVERHEAD;
/// The most entries the memory budget allows, and so the most slots the queue grows to (it
/// doubles from 4).
pub(super) const MAX_SLOTS: usize = (CAP / ENTRY_MEMORY).next_power_of_two();

impl Entry {
    pub(super) fn name(&self) -> Option<Bytes> {
        (self.name_len != NO_NAME).then(|| self.data.slice(..self.name_len as usize))
    }

    pub(super) fn value(&self) -> Bytes {
        if self.name_len == NO_NAME {
            self.data.clone()
        } else {
            self.data.slice(self.name_len as usize..)
        }
    }

    /// Its size (§4.1), or a lower bound of it when the name is unknown.
    fn size(&self) -> usize {
        ENTRY_OVERHEAD + self.data.len()
    }

    fn memory(&self) -> usize {
        ENTRY_MEMORY + self.data.len()
    }
}

/// What a dynamic index (0 = the newest entry) refers to.
pub(super) enum Lookup<'a> {
    Known(&'a Entry),
    /// An entry inserted before the decoder was synchronised, or evicted here but maybe not by
    /// the peer.
    Unknown,
    /// Beyond the peer's table: a protocol error.
    Beyond,
}

/// Something the table's state changed that the decoder counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Events {
    /// A size update over [`CAP`].
    pub(super) capped: bool,
    /// The table became fully known again.
    pub(super) resynced: bool,
}

#[derive(Debug)]
pub(super) struct DynamicTable {
    entries: VecDeque<Entry>,
    /// The sum of the entries' sizes (lower bounds).
    size: usize,
    /// The sum of the entries' memory, at most [`CAP`].
    memory: usize,
    /// The maximum size this table keeps to: the peer's if `max_exact`, else an assumption.
    max: usize,
    max_exact: bool,
    /// The peer's table may hold entries older than those held here.
    older_unknown: bool,
    /// Entries held whose name is unknown.
    unnamed: usize,
}

impl DynamicTable {
    /// A table followed from the connection's start: empty, `DEFAULT_MAX` bytes at most.
    pub(super) fn known() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            memory: 0,
            max: DEFAULT_MAX,
            max_exact: true,
            older_unknown: false,
            unnamed: 0,
        }
    }

    /// A table of a connection picked up mid-way: nothing known.
    pub(super) fn midway() -> Self {
        Self {
            max_exact: false,
            older_unknown: true,
            ..Self::known()
        }
    }

    /// Forgets every entry: a lost header block may have inserted any number of entries before
    /// them (and changed the maximum size). The last maximum stays as the assumption.
    pub(super) fn desync(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.memory = 0;
        self.unnamed = 0;
        self.max_exact = false;
        self.older_unknown = true;
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every entry of the peer's table is known, name and value.
    pub(super) fn is_known(&self) -> bool {
        !self.older_unknown && self.unnamed == 0
    }

    /// The sum of the entries' sizes (lower bounds), at most [`CAP`].
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Heap bytes held: the queue's slots, the entries' data and its overhead.
    pub(super) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>() + self.memory
            - self.entries.len() * size_of::<Entry>()
    }

    pub(super) fn get(&self, index: usize) -> Lookup<'_> {
        match self.entries.get(index) {
            Some(e) => Lookup::Known(e),
            None if self.older_unknown => Lookup::Unknown,
            None => Lookup::Beyond,
        }
    }

    /// Inserts a field (§4.4): evicts from the oldest end until it fits; an entry larger than
    /// the maximum empties the table and is not inserted. The name and value are copied.
    pub(super) fn insert(&mut self, name: Option<&[u8]>, value: &[u8]) -> Events {
        let was_known = self.is_known();
        let name_len = name.map_or(0, <[u8]>::len);
        let size = ENTRY_OVERHEAD + name_len + value.len();
        if size > self.max {
            self.evict_while(|_, _| true);
            // The peer emptied its table too (the entry's size is at least `size`), unless its
            // maximum is larger than assumed.
            self.older_unknown = !self.max_exact;
        } else {
            let room = self.max - size;
            let evicted = self.evict_while(|size, _| size > room);
            let memory = ENTRY_MEMORY + name_len + value.len();
            let over_budget = self.evict_while(|_, used| used + memory > CAP);
            let mut data = Vec::with_capacity(name_len + value.len());
            data.extend_from_slice(name.unwrap_or_default());
            data.extend_from_slice(value);
            let entry = Entry {
                data: Bytes::from(data),
                name_len: name.map_or(NO_NAME, |_| {
                    u32::try_from(name_len).expect("names are at most MAX_STRING bytes")
                }),
            };
            if self.entries.len() == self.entries.capacity() {
                // Double exactly, so that the slots stay within `MAX_SLOTS`.
                self.entries.reserve_exact(self.entries.len().max(4));
            }
            self.unnamed += usize::from(name.is_none());
            self.size += size;
            self.memory += memory;
            self.entries.push_front(entry);
            self.after_eviction(evicted);
            if over_budget {
                // Evicted to stay within the memory budget: the peer still has them.
                self.older_unknown = true;
            }
        }
        Events {
            capped: false,
            resynced: !was_known && self.is_known(),
        }
    }

    /// A dynamic table size update (§6.3). Above [`CAP`] the table keeps to the cap and the
    /// peer's maximum becomes unknown.
    pub(super) fn set_max(&mut self, max: usize) -> Events {
        let was_known = self.is_known();
        let capped = max > CAP;
        self.max = max.min(CAP);
        self.max_exact = !capped;
        let max = self.max;
        let evicted = self.evict_while(|size, _| size > max);
        self.after_eviction(evicted);
        Events {
            capped,
            resynced: !was_known && self.is_known(),
        }
    }

    /// Evicts the oldest entries while `over(size, memory)` holds; whether it evicted.
    fn evict_while(&mut self, over: impl Fn(usize, usize) -> bool) -> bool {
        let mut evicted = false;
        while over(self.size, self.memory) {
            let Some(old) = self.entries.pop_back() else {
                break;
            };
            self.size -= old.size();
            self.memory -= old.memory();
            self.unnamed -= usize::from(old.name_len == NO_NAME);
            evicted = true;
        }
        evicted
    }

    /// Updates what is known of older entries after entries were evicted by the size rule
    /// (`evicted`) or the maximum changed.
    fn after_eviction(&mut self, evicted: bool) {
        if !self.max_exact {
            // Entries evicted under an assumed maximum may still be in the peer's table.
            if evicted {
                self.older_unknown = true;
            }
        } else if evicted || self.size + ENTRY_OVERHEAD > self.max {
            // The peer evicted at least what was evicted here, oldest first, so nothing older
            // than the entries held is left; or there is no room for anything older (each entry
            // is at least 32 bytes, and those held that the peer has are at least their bounds).
            self.older_unknown = false;
        }
    }
}

#[cfg(test)]
impl DynamicTable {
    /// The entries held, newest first: `(name, value)`.
    pub(super) fn entries(&self) -> Vec<(Option<&[u8]>, &[u8])> {
        self.entries
            .iter()
            .map(|e| {
                let value = if e.name_len == NO_NAME {
                    &e.data[..]
                } else {
                    &e.data[e.name_len as usize..]
                };
                (
                    (e.name_len != NO_NAME).then(|| &e.data[..e.name_len as usize]),
                    value,
                )
            })
            .collect()
    }
}
