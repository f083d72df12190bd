//! Chunked transfer coding (RFC 9112 section 7.1), followed without keeping the data: the
//! decoder only tracks sizes and line ends, and when a capture gap hides the framing, the end
//! is spotted in the stream's last bytes (`0\r\n\r\n`).

/// Bytes of the stream's end remembered to find a chunked terminator across syscalls.
const ROLL_LEN: usize = 16;

/// The last bytes of a stream, to spot the chunked terminator across syscalls.
#[derive(Debug, Default)]
pub struct Roll {
    buf: Vec<u8>,
}

impl Roll {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&bytes[bytes.len().saturating_sub(ROLL_LEN)..]);
        let excess = self.buf.len().saturating_sub(ROLL_LEN);
        self.buf.drain(..excess);
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn ends_chunked(&self) -> bool {
        self.buf.ends_with(b"\n0\r\n\r\n") || self.buf == b"0\r\n\r\n"
    }
}

#[derive(Debug, Default)]
enum ChunkState {
    /// Reading the hex size line (extensions allowed).
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailer,
}

/// Incremental chunked-body decoder that never needs the data bytes themselves.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: ChunkState,
    line: Vec<u8>,
    size: u64,
    size_digits: u32,
    in_ext: bool,
}

pub enum Decoded {
    Done(usize),
    More,
    Invalid,
}

impl ChunkDecoder {
    pub fn feed(&mut self, data: &[u8]) -> Decoded {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                ChunkState::Size => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\n' => {
                            if self.size_digits == 0 {
                                return Decoded::Invalid;
                            }
                            self.state = if self.size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(self.size)
                            };
                            self.size = 0;
                            self.size_digits = 0;
                            self.in_ext = false;
                        }
                        b'\r' => {}
                        b';' => self.in_ext = true,
                        _ if self.in_ext => {}
                        _ => {
                            let Some(d) = (b as char).to_digit(16) else {
                                return Decoded::Invalid;
                            };
                            self.size_digits += 1;
                            if self.size_digits > 15 {
                                return Decoded::Invalid;
                            }
                            self.size = self.size * 16 + u64::from(d);
                        }
                    }
                }
                ChunkState::Data(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len() - i);
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Decoded::Invalid,
                    }
                }
                ChunkState::Trailer => {
                    let b = data[i];
                    i += 1;
                    if b == b'\n' {
                        let empty = self.line.is_empty() || self.line == b"\r";
                        self.line.clear();
                        if empty {
                            return Decoded::Done(i);
                        }
                    } else if self.line.len() < 1024 {
                        self.line.push(b);
                    }
                }
            }
        }
        Decoded::More
    }

    /// Skips uncaptured bytes; false if they hide framing (size lines) we needed.
    pub fn skip(&mut self, gap: u64) -> bool {
        match self.state {
            ChunkState::Data(n) if gap <= n => {
                self.state = if gap == n {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(n - gap)
                };
                true
            }
            _ => false,
        }
    }
}
