//! The header tables (RFC 7541 §2.3): the static table (Appendix A) and one direction's dynamic
//! table as far as the decoder knows it.
//!
//! The dynamic table is held newest first. Index positions count from the newest entry, so the
//! entries inserted since the decoder was (re)synchronised keep their positions whatever came
//! before them; the older ones are unknown (`older_unknown`) until the peer's table provably
//! holds none of them: a size update that leaves no room for them (0 empties the table), or
//! newer entries that fill it.
//!
//! Sizes (32 + name + value, §4.1) are lower bounds when an entry's name is unknown, so this
//! table evicts at most what the peer's table evicts: the entries held are the peer's, newest
//! first, possibly followed by some the peer has already evicted (which a conforming peer never
//! refers to). With the peer's maximum size unknown (a connection picked up mid-way, a lost
//! block, a size over [`CAP`]) the table keeps at most [`DEFAULT_MAX`] bytes (or the last size
//! seen, at most [`CAP`]); what it drops then may still be in the peer's table and becomes
//! unknown, never wrong.

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

/// A dynamic-table entry.
#[derive(Debug)]
pub(super) struct Entry {
    /// `None` when inserted by a literal whose name referred to an unknown entry.
    pub(super) name: Option<Bytes>,
    pub(super) value: Bytes,
    /// Its size (§4.1), or a lower bound of it when the name is unknown.
    size: usize,
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

    /// Bytes held on the heap for the entries: their sizes (which include 32 bytes for each
    /// entry's bookkeeping) and the queue's slots.
    pub(super) fn heap_bytes(&self) -> usize {
        self.size + self.entries.capacity() * size_of::<Entry>()
    }

    pub(super) fn get(&self, index: usize) -> Lookup<'_> {
        match self.entries.get(index) {
            Some(e) => Lookup::Known(e),
            None if self.older_unknown => Lookup::Unknown,
            None => Lookup::Beyond,
        }
    }

    /// Inserts a field (§4.4): evicts from the oldest end until it fits; an entry larger than
    /// the maximum empties the table and is not inserted.
    pub(super) fn insert(&mut self, name: Option<Bytes>, value: Bytes) -> Events {
        let was_known = self.is_known();
        let size = ENTRY_OVERHEAD + name.as_ref().map_or(0, Bytes::len) + value.len();
        if size > self.max {
            self.evict_to(0);
            // The peer emptied its table too (the entry's size is at least `size`), unless its
            // maximum is larger than assumed.
            self.older_unknown = !self.max_exact;
        } else {
            let evicted = self.evict_to(self.max - size);
            self.unnamed += usize::from(name.is_none());
            self.entries.push_front(Entry { name, value, size });
            self.size += size;
            self.after_eviction(evicted);
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
        let evicted = self.evict_to(self.max);
        self.after_eviction(evicted);
        Events {
            capped,
            resynced: !was_known && self.is_known(),
        }
    }

    /// Evicts the oldest entries until the table's size is at most `size`; whether it evicted.
    fn evict_to(&mut self, size: usize) -> bool {
        let mut evicted = false;
        while self.size > size {
            let Some(old) = self.entries.pop_back() else {
                break;
            };
            self.size -= old.size;
            self.unnamed -= usize::from(old.name.is_none());
            evicted = true;
        }
        evicted
    }

    /// Updates what is known of older entries after entries were evicted (`evicted`) or the
    /// maximum changed.
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
            .map(|e| (e.name.as_deref(), &e.value[..]))
            .collect()
    }
}
