//! A test-only HPACK encoder: writes the representations it is told to (every kind, Huffman
//! or not), and keeps its own model of the dynamic table, written as plainly as possible and
//! independently of the decoder's, to pick indexes and to say what the decoder must produce.

use std::collections::VecDeque;

use bytes::Bytes;

use super::super::{huffman, table::STATIC};

/// How a literal affects the table (§6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexing {
    Incremental,
    Without,
    Never,
}

/// One header field representation, or a size update.
#[derive(Clone, Debug)]
pub enum Repr {
    Indexed(usize),
    Literal {
        indexing: Indexing,
        /// The name's index, or its text.
        name: Result<usize, Vec<u8>>,
        value: Vec<u8>,
        huffman: bool,
    },
    SizeUpdate(usize),
}

/// Appends `value` as an integer with a `prefix`-bit prefix, `flags` in the first byte's other
/// bits (§5.1).
pub fn integer(out: &mut Vec<u8>, prefix: u8, flags: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).expect("below the prefix's maximum"));
        return;
    }
    out.push(flags | u8::try_from(max).expect("prefix of at most 7 bits"));
    let mut rest = value - max;
    while rest >= 128 {
        out.push(0x80 | u8::try_from(rest % 128).expect("7 bits"));
        rest /= 128;
    }
    out.push(u8::try_from(rest).expect("7 bits"));
}

/// Appends a string literal (§5.2).
pub fn string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
    if huffman {
        let mut coded = Vec::new();
        huffman::encode(s, &mut coded);
        integer(out, 7, 0x80, coded.len());
        out.extend_from_slice(&coded);
    } else {
        integer(out, 7, 0, s.len());
        out.extend_from_slice(s);
    }
}

/// Encodes `reprs` as one header block.
pub fn encode(reprs: &[Repr]) -> Bytes {
    let mut out = Vec::new();
    for r in reprs {
        match r {
            Repr::Indexed(i) => integer(&mut out, 7, 0x80, *i),
            Repr::SizeUpdate(n) => integer(&mut out, 5, 0x20, *n),
            Repr::Literal {
                indexing,
                name,
                value,
                huffman,
            } => {
                let (prefix, flags) = match indexing {
                    Indexing::Incremental => (6, 0x40),
                    Indexing::Without => (4, 0),
                    Indexing::Never => (4, 0x10),
                };
                match name {
                    Ok(i) => integer(&mut out, prefix, flags, *i),
                    Err(n) => {
                        integer(&mut out, prefix, flags, 0);
                        string(&mut out, n, *huffman);
                    }
                }
                string(&mut out, value, *huffman);
            }
        }
    }
    Bytes::from(out)
}

/// A header field: name and value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// What an encoder wants to send: a field and how, or a size update.
#[derive(Clone, Debug)]
pub enum Intent {
    Field {
        name: Vec<u8>,
        value: Vec<u8>,
        indexing: Indexing,
        huffman: bool,
        /// Use an index for the whole field or the name when the tables have it.
        use_index: bool,
    },
    SizeUpdate(usize),
}

/// The encoder's dynamic table: newest first, evicted by the rule of §4.4.
#[derive(Clone, Debug)]
pub struct Model {
    pub entries: VecDeque<Pair>,
    pub max: usize,
}

impl Model {
    pub fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            max: 4096,
        }
    }

    pub fn size(&self) -> usize {
        self.entries
            .iter()
            .map(|(n, v)| 32 + n.len() + v.len())
            .sum()
    }

    fn evict_to(&mut self, room: usize) {
        while self.size() > room {
            self.entries.pop_back();
        }
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = 32 + name.len() + value.len();
        if size > self.max {
            self.entries.clear();
            return;
        }
        self.evict_to(self.max - size);
        self.entries.push_front((name.to_vec(), value.to_vec()));
    }

    /// The index of the field `(name, value)` and of its name alone, if the tables have them.
    fn find(&self, name: &[u8], value: &[u8]) -> (Option<usize>, Option<usize>) {
        let all = STATIC
            .iter()
            .map(|&(n, v)| (n, v))
            .chain(self.entries.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut field = None;
        let mut name_only = None;
        for (i, (n, v)) in all.enumerate() {
            if n == name {
                name_only.get_or_insert(i + 1);
                if v == value {
                    field.get_or_insert(i + 1);
                }
            }
        }
        (field, name_only)
    }

    /// The representation of `intent` against this table, which it updates; and the field the
    /// decoder must produce, if any.
    pub fn encode(&mut self, intent: &Intent) -> (Repr, Option<Pair>) {
        match intent {
            Intent::SizeUpdate(n) => {
                self.max = *n;
                self.evict_to(*n);
                (Repr::SizeUpdate(*n), None)
            }
            Intent::Field {
                name,
                value,
                indexing,
                huffman,
                use_index,
            } => {
                let (field, name_index) = self.find(name, value);
                let repr = match (field, name_index) {
                    (Some(i), _) if *use_index => Repr::Indexed(i),
                    (_, found) => {
                        if *indexing == Indexing::Incremental {
                            self.insert(name, value);
                        }
                        Repr::Literal {
                            indexing: *indexing,
                            name: found.filter(|_| *use_index).ok_or_else(|| name.clone()),
                            value: value.clone(),
                            huffman: *huffman,
                        }
                    }
                };
                (repr, Some((name.clone(), value.clone())))
            }
        }
    }
}
