//! Ring-buffer record decoding on arbitrary bytes: a record is decoded or refused with an
//! error, never a panic, and what a data record hands on stays inside the record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_fuzz::kernel::records::{Event, decode, peer_of, socket_addr};

fuzz_target!(|record: &[u8]| {
    let Ok(event) = decode(record) else { return };
    match event {
        Event::Data { header, payload } => {
            // HTTP/2 frame records may outnumber the bytes moved (a record header per frame),
            // within their own bound; captured bytes never do.
            if header.flags & tracer_common::FLAG_H2_FRAMES != 0 {
                assert!(
                    payload.len() <= tracer_common::h2::MAX_RECORDS,
                    "more frame records than an event carries"
                );
            } else {
                assert!(
                    payload.len() as u64 <= header.total_len,
                    "payload longer than the syscall moved"
                );
                assert!(
                    payload.len() <= tracer_common::MAX_CAPTURE,
                    "payload longer than the capture bound"
                );
            }
            assert_eq!(
                payload.len(),
                header.captured_len as usize,
                "payload length is not the captured length"
            );
            let range = record.as_ptr_range();
            assert!(
                payload.is_empty() || range.contains(&payload.as_ptr()),
                "payload outside the record"
            );
            assert!(Event::tail(&header).len() <= tracer_common::TAIL_LEN);
            let _ = peer_of(&header.tuple);
        }
        Event::Conn(c) => {
            let _ = socket_addr(c.family, c.port, &c.addr);
        }
        Event::Close(_) | Event::Write(_) => {}
    }
});
