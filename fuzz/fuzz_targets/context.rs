//! Trace-context extraction on arbitrary header sets. The input is a list of headers (split at
//! `\n`); each entry's first byte picks the name (one of the context headers, or a name of the
//! entry's own before a `:`), the rest is the value. They are put in a request head, parsed as
//! the agent parses heads, and the context is extracted with every propagator order.
//!
//! Checked: no panic; ids that come out are never all zeros and are exactly the header's hex
//! digits (a 64-bit B3 trace id left-padded with zeros).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tracer_common::http as names;
use tracer_fuzz::{
    protocol::http1::parse::parse_head,
    trace::context::{Propagator, extract},
};

const NAMES: [&str; 7] = [
    names::B3_TRACE_ID,
    names::B3_SPAN_ID,
    names::B3_SAMPLED,
    names::B3_FLAGS,
    names::B3_SINGLE,
    names::TRACEPARENT,
    names::B3_PARENT_SPAN_ID,
];

const ORDERS: [&[Propagator]; 4] = [
    &Propagator::ALL,
    &[
        Propagator::TraceContext,
        Propagator::B3Single,
        Propagator::B3Multi,
    ],
    &[Propagator::B3Single],
    &[Propagator::TraceContext],
];

fuzz_target!(|input: &[u8]| {
    let mut head = b"GET /x HTTP/1.1\r\nHost: svc\r\n".to_vec();
    for entry in input.split(|&b| b == b'\n') {
        let Some((&pick, rest)) = entry.split_first() else {
            continue;
        };
        match NAMES.get(usize::from(pick) % (NAMES.len() + 1)) {
            Some(name) => {
                head.extend_from_slice(name.as_bytes());
                head.extend_from_slice(b": ");
            }
            None => {}
        }
        head.extend_from_slice(rest);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let parsed = parse_head(Bytes::from(head), false, 0);
    let h = &parsed.context;
    for order in ORDERS {
        let Some(x) = extract(h, order) else { continue };
        // `b3` and `b3multi` name one B3 propagator, which reads `b3`, then `x-b3-*`.
        let b3 = |p: &Propagator| matches!(p, Propagator::B3Multi | Propagator::B3Single);
        assert!(
            order.contains(&x.source) || (b3(&x.source) && order.iter().any(b3)),
            "context from a propagator not asked for"
        );
        let Some((trace, span)) = x.ids else { continue };
        assert_ne!(trace.0, [0; 16], "all-zero trace id accepted");
        assert_ne!(span.0, [0; 8], "all-zero span id accepted");
        // The ids are the header's digits: compare them as the header wrote them.
        let (t, s) = match x.source {
            Propagator::B3Multi => (
                h.b3_trace_id()
                    .expect("b3 multi ids without x-b3-traceid")
                    .to_owned(),
                h.b3_span_id()
                    .expect("b3 multi ids without x-b3-spanid")
                    .to_owned(),
            ),
            Propagator::B3Single => {
                let v = h
                    .b3()
                    .expect("b3 ids without a b3 header")
                    .trim_matches([' ', '\t']);
                let mut f = v.split('-');
                (
                    f.next().unwrap_or_default().to_owned(),
                    f.next().unwrap_or_default().to_owned(),
                )
            }
            Propagator::TraceContext => {
                let v = h.traceparent().expect("w3c ids without traceparent");
                let mut f = v.split('-').skip(1);
                (
                    f.next().unwrap_or_default().to_owned(),
                    f.next().unwrap_or_default().to_owned(),
                )
            }
        };
        // Values are read without the optional whitespace around them.
        let ows = |v: &str| v.trim_matches([' ', '\t']).to_ascii_lowercase();
        assert_eq!(trace.to_string(), format!("{:0>32}", ows(&t)), "trace id");
        assert_eq!(span.to_string(), ows(&s), "span id");
    }
});
