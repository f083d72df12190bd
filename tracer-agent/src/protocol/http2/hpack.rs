//! PLACEHOLDER until branch h-hpack lands: a minimal HPACK decoder (RFC 7541) with the agreed
//! interface (no Huffman), so that the HTTP/2 assembly builds and its tests run. Replaced
//! wholesale by the h-hpack decoder at merge.

use std::collections::VecDeque;

use bytes::Bytes;

/// A decoded header field; `None` = it refers to a table entry the decoder does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Bytes>,
    pub value: Option<Bytes>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("header block truncated")]
    Truncated,
    #[error("Huffman-coded strings are not supported by the placeholder decoder")]
    Huffman,
    #[error("index {0} out of the tables")]
    BadIndex(usize),
}

const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[derive(Debug)]
pub struct Decoder {
    table: VecDeque<(Option<Bytes>, Option<Bytes>)>,
    /// Entries below the known ones are unknown (mid-way or desynchronised).
    unknown_below: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    #[must_use]
    pub fn new() -> Self {
        Self {
            table: VecDeque::new(),
            unknown_below: false,
        }
    }

    #[must_use]
    pub fn midway() -> Self {
        Self {
            table: VecDeque::new(),
            unknown_below: true,
        }
    }

    pub fn desync(&mut self) {
        self.table.clear();
        self.unknown_below = true;
    }

    #[must_use]
    pub fn footprint(&self) -> usize {
        self.table
            .iter()
            .map(|(n, v)| 32 + n.as_ref().map_or(0, Bytes::len) + v.as_ref().map_or(0, Bytes::len))
            .sum()
    }

    fn lookup(&self, index: usize) -> Result<(Option<Bytes>, Option<Bytes>), DecodeError> {
        match index {
            0 => Err(DecodeError::BadIndex(0)),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((
                    Some(Bytes::from_static(n.as_bytes())),
                    Some(Bytes::from_static(v.as_bytes())),
                ))
            }
            _ => match self.table.get(index - 62) {
                Some(e) => Ok(e.clone()),
                None if self.unknown_below => Ok((None, None)),
                None => Err(DecodeError::BadIndex(index)),
            },
        }
    }

    /// Decodes `block`, handing each field to `out` as it is decoded.
    ///
    /// # Errors
    /// A block cut short or that refers to entries that cannot exist.
    pub fn decode(&mut self, block: &Bytes, mut out: impl FnMut(Field)) -> Result<(), DecodeError> {
        let mut at = 0;
        while at < block.len() {
            let b = block[at];
            if b & 0x80 != 0 {
                let i = int(block, &mut at, 7)?;
                let (name, value) = self.lookup(i)?;
                out(Field { name, value });
            } else if b & 0xe0 == 0x20 {
                int(block, &mut at, 5)?;
            } else {
                let (prefix, index) = if b & 0x40 != 0 { (6, true) } else { (4, false) };
                let i = int(block, &mut at, prefix)?;
                let name = if i == 0 {
                    Some(string(block, &mut at)?)
                } else {
                    self.lookup(i)?.0
                };
                let value = string(block, &mut at)?;
                if index {
                    self.table.push_front((name.clone(), Some(value.clone())));
                }
                out(Field {
                    name,
                    value: Some(value),
                });
            }
        }
        Ok(())
    }
}

fn int(b: &Bytes, at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let max = (1usize << prefix) - 1;
    let mut v = usize::from(*b.get(*at).ok_or(DecodeError::Truncated)?) & max;
    *at += 1;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let c = *b.get(*at).ok_or(DecodeError::Truncated)?;
        *at += 1;
        v += usize::from(c & 0x7f) << shift;
        shift += 7;
        if c & 0x80 == 0 || shift > 28 {
            return Ok(v);
        }
    }
}

fn string(b: &Bytes, at: &mut usize) -> Result<Bytes, DecodeError> {
    let huffman = b.get(*at).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = int(b, at, 7)?;
    if huffman {
        return Err(DecodeError::Huffman);
    }
    let end = at
        .checked_add(len)
        .filter(|e| *e <= b.len())
        .ok_or(DecodeError::Truncated)?;
    let s = b.slice(*at..end);
    *at = end;
    Ok(s)
}
