//! Decoding of ring-buffer records into typed events. Every length is checked against the
//! record: a short or inconsistent record is an error, counted by the caller, never a panic.
//! The payload of a data event is a slice of the ring buffer's own memory: nothing is copied
//! until the protocol layer keeps a message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tracer_common::{
    AF_INET, AF_INET6, CloseEvent, ConnEvent, DataEvent, EventKind, FLAG_H2_FRAMES, MAX_CAPTURE,
    SockTuple, TAIL_LEN, WriteEvent,
};

#[derive(Debug)]
pub enum Event<'a> {
    Data {
        header: DataEvent,
        payload: &'a [u8],
    },
    Conn(ConnEvent),
    Close(CloseEvent),
    Write(WriteEvent),
}

impl Event<'_> {
    /// The valid part of a data event's tail (the last bytes of a partly captured buffer).
    #[must_use]
    pub fn tail(header: &DataEvent) -> &[u8] {
        let n = usize::try_from(header.tail_len).unwrap_or(0).min(TAIL_LEN);
        &header.tail[TAIL_LEN - n..]
    }
}

/// Socket address from the kernel's family, port and 16-byte address; v4-mapped IPv6 becomes
/// IPv4. `None` for other families.
#[must_use]
pub fn socket_addr(family: u16, port: u16, addr: &[u8; 16]) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The peer end of a socket tuple.
#[must_use]
pub fn peer_of(t: &SockTuple) -> Option<SocketAddr> {
    socket_addr(t.family, t.dport, &t.daddr)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error(
        "data record claims {claimed} captured bytes but carries {actual} (or more than it moved, or than the capture bound)"
    )]
    Length { claimed: usize, actual: usize },
}

fn read<T: Copy>(buf: &[u8]) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short(buf.len()));
    }
    // SAFETY: length checked; T is a plain #[repr(C)] integer struct, any bit pattern is valid.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

pub fn decode(buf: &[u8]) -> Result<Event<'_>, DecodeError> {
    let kind: u32 = read(buf)?;
    match EventKind::from_u32(kind) {
        Some(EventKind::Data) => {
            let header: DataEvent = read(buf)?;
            let claimed = usize::try_from(header.captured_len).unwrap_or(usize::MAX);
            let body = &buf[size_of::<DataEvent>()..];
            // Frame records (HTTP/2) may outnumber the bytes moved: a record header per frame.
            let frames = header.flags & FLAG_H2_FRAMES != 0;
            if body.len() < claimed
                || (!frames && u64::from(header.captured_len) > header.total_len)
                || claimed > MAX_CAPTURE
            {
                return Err(DecodeError::Length {
                    claimed,
                    actual: body.len(),
                });
            }
            Ok(Event::Data {
                header,
                payload: &body[..claimed],
            })
        }
        Some(EventKind::Conn) => Ok(Event::Conn(read(buf)?)),
        Some(EventKind::Close) => Ok(Event::Close(read(buf)?)),
        Some(EventKind::Write) => Ok(Event::Write(read(buf)?)),
        None => Err(DecodeError::UnknownKind(kind)),
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::SockTuple;

    use super::*;

    fn data_record(captured: u32, total: u64, payload: &[u8]) -> Vec<u8> {
        let header = DataEvent {
            kind: EventKind::Data as u32,
            direction: 0,
            pid: 1,
            tid: 2,
            fd: 3,
            flags: 0,
            enter_ns: 10,
            exit_ns: 20,
            total_len: total,
            captured_len: captured,
            tail_len: 4,
            owner: 0,
            seq: 0,
            tail: *b"............\r\n\r\n",
            tuple: SockTuple::default(),
            server_span: [0; 8],
            trace_id: [0; 16],
        };
        // SAFETY: plain-old-data header viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const header).cast::<u8>(), size_of::<DataEvent>())
        };
        let mut v = bytes.to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_data_with_payload_and_tail() {
        let rec = data_record(5, 100, b"GET /");
        match decode(&rec).unwrap() {
            Event::Data { header, payload } => {
                assert_eq!(payload, b"GET /");
                assert_eq!(header.total_len, 100);
                assert_eq!(Event::tail(&header), b"\r\n\r\n");
            }
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert_eq!(decode(&[1, 0]).unwrap_err(), DecodeError::Short(2));
        assert_eq!(
            decode(&[9, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::UnknownKind(9)
        );
        let rec = data_record(50, 100, b"GET /");
        assert!(matches!(decode(&rec), Err(DecodeError::Length { .. })));
        let rec = data_record(5, 2, b"GET /");
        assert!(matches!(decode(&rec), Err(DecodeError::Length { .. })));
        let full = data_record(5, 100, b"GET /");
        assert!(matches!(decode(&full[..40]), Err(DecodeError::Short(40))));
    }
}
