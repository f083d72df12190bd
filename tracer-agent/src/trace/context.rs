//! Trace context carried by HTTP headers: B3 multi-header, B3 single (`b3`) and W3C
//! `traceparent`, tried in the order of `OTEL_PROPAGATORS`.
//!
//! Values that are malformed (wrong length, non-hex, all zeros) are ignored rather than
//! trusted: a bad header must not merge unrelated requests into one trace. 64-bit B3 trace ids
//! are left-padded with zeros to 128 bits, exactly as the collector's Zipkin receiver does, so
//! the sidecar's Zipkin spans and our OTLP spans share one trace id.

use std::str::FromStr;

use super::ids::{SpanId, TraceId, decode_hex};
use crate::protocol::http::ContextHeaders;

/// What the sender decided about sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    Sampled,
    NotSampled,
    /// Debug (`x-b3-flags: 1` or `b3: ...-d`): always exported.
    Debug,
    /// No decision was passed; the local sampler decides.
    Deferred,
}

/// Which header format a context came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagator {
    B3Multi,
    B3Single,
    TraceContext,
}

impl Propagator {
    /// Every propagator, in the default order (`b3multi,b3,tracecontext`).
    pub const ALL: [Self; 3] = [Self::B3Multi, Self::B3Single, Self::TraceContext];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::B3Multi => "b3multi",
            Self::B3Single => "b3",
            Self::TraceContext => "tracecontext",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown propagator `{0}` (expected a comma-separated list of b3multi, b3, tracecontext)")]
pub struct UnknownPropagator(String);

impl FromStr for Propagator {
    type Err = UnknownPropagator;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "b3multi" => Ok(Self::B3Multi),
            "b3" => Ok(Self::B3Single),
            "tracecontext" => Ok(Self::TraceContext),
            other => Err(UnknownPropagator(other.to_owned())),
        }
    }
}

/// Context extracted from an HTTP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// Trace and span ids, absent for a sampling-only header (`b3: 0`, lone `x-b3-sampled`).
    pub ids: Option<(TraceId, SpanId)>,
    pub sampling: Sampling,
    pub source: Propagator,
}

/// Tries each propagator in order; the first that yields a well-formed context wins. `b3` and
/// `b3multi` both name the B3 propagator, which (as OpenTelemetry's does) reads the single `b3`
/// header first and falls back to `x-b3-*` when it is absent or malformed. The kernel's head
/// scanner (`tracer-ebpf/src/write/head.rs`) follows the same rules, with the order given by
/// [`propagation_flags`]; the rows of `context_cases.rs` hold both to them.
#[must_use]
pub fn extract(headers: &ContextHeaders, order: &[Propagator]) -> Option<Extracted> {
    order.iter().find_map(|p| match p {
        Propagator::B3Multi | Propagator::B3Single => headers
            .b3()
            .and_then(extract_b3_single)
            .or_else(|| extract_b3_multi(headers)),
        Propagator::TraceContext => headers.traceparent().and_then(extract_traceparent),
    })
}

/// The kernel's `PROPAGATION` global (`tracer_common::PROPAGATE_*`) for a propagator order.
#[must_use]
pub fn propagation_flags(order: &[Propagator]) -> u32 {
    let b3 = order.iter().position(|p| *p != Propagator::TraceContext);
    let w3c = order.iter().position(|p| *p == Propagator::TraceContext);
    let mut flags = 0;
    if b3.is_some() {
        flags |= tracer_common::PROPAGATE_B3;
    }
    if let Some(w) = w3c {
        flags |= tracer_common::PROPAGATE_TRACECONTEXT;
        if b3.is_none_or(|b| w < b) {
            flags |= tracer_common::PROPAGATE_TRACECONTEXT_FIRST;
        }
    }
    flags
}

/// `x-b3-sampled`: `1`/`true`, `0`/`false`; anything else refuses the context.
fn b3_multi_sampled(v: &str) -> Option<Sampling> {
    match v {
        "1" | "true" => Some(Sampling::Sampled),
        "0" | "false" => Some(Sampling::NotSampled),
        _ => None,
    }
}

/// The sampling state of the single `b3` header: `1`, `0` or `d` (debug).
fn b3_single_state(v: &str) -> Option<Sampling> {
    match v {
        "1" => Some(Sampling::Sampled),
        "0" => Some(Sampling::NotSampled),
        "d" => Some(Sampling::Debug),
        _ => None,
    }
}

fn extract_b3_multi(h: &ContextHeaders) -> Option<Extracted> {
    let debug = h.b3_flags() == Some("1");
    let sampled = match h.b3_sampled() {
        Some(v) => Some(b3_multi_sampled(v)?),
        None => None,
    };
    let sampling = match (debug, sampled) {
        (true, _) => Sampling::Debug,
        (false, Some(s)) => s,
        (false, None) => Sampling::Deferred,
    };
    let ids = match (h.b3_trace_id(), h.b3_span_id()) {
        (Some(t), Some(s)) => Some((
            TraceId::from_hex(t, true, false)?,
            SpanId::from_hex(s, false)?,
        )),
        // Ids present but incomplete: malformed, not a sampling-only context.
        (Some(_), None) | (None, Some(_)) => return None,
        (None, None) => None,
    };
    if ids.is_none() && sampling == Sampling::Deferred {
        return None;
    }
    Some(Extracted {
        ids,
        sampling,
        source: Propagator::B3Multi,
    })
}

/// The first `N` dash-separated fields of `v` and how many fields it has (counting past `N`),
/// without collecting them.
fn dash_fields<const N: usize>(v: &str) -> ([&str; N], usize) {
    let mut fields = [""; N];
    let mut count = 0;
    for (i, f) in v.split('-').enumerate() {
        if let Some(slot) = fields.get_mut(i) {
            *slot = f;
        }
        count = i + 1;
    }
    (fields, count)
}

/// `{traceid}-{spanid}[-{sampling}[-{parentspanid}]]`, or a lone sampling state.
fn extract_b3_single(v: &str) -> Option<Extracted> {
    let ([t, s, state, parent], count) = dash_fields::<4>(v);
    let (ids, sampling) = match count {
        1 => (None, b3_single_state(t)?),
        2 => (Some((t, s)), Sampling::Deferred),
        3 => (Some((t, s)), b3_single_state(state)?),
        4 => {
            SpanId::from_hex(parent, false)?;
            (Some((t, s)), b3_single_state(state)?)
        }
        _ => return None,
    };
    let ids = match ids {
        Some((t, s)) => Some((
            TraceId::from_hex(t, true, false)?,
            SpanId::from_hex(s, false)?,
        )),
        None => None,
    };
    Some(Extracted {
        ids,
        sampling,
        source: Propagator::B3Single,
    })
}

/// `{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex as the W3C spec requires.
fn extract_traceparent(v: &str) -> Option<Extracted> {
    let ([version, trace, span, flags], count) = dash_fields::<4>(v);
    if count < 4 {
        return None;
    }
    let mut ver = [0u8; 1];
    decode_hex(version, &mut ver, true)?;
    // Version ff is forbidden; version 00 has exactly four fields; later versions may add more.
    if ver[0] == 0xff || (ver[0] == 0 && count != 4) {
        return None;
    }
    let mut fl = [0u8; 1];
    decode_hex(flags, &mut fl, true)?;
    let trace_id = TraceId::from_hex(trace, false, true)?;
    let span_id = SpanId::from_hex(span, true)?;
    Some(Extracted {
        ids: Some((trace_id, span_id)),
        sampling: if fl[0] & 1 == 1 {
            Sampling::Sampled
        } else {
            Sampling::NotSampled
        },
        source: Propagator::TraceContext,
    })
}

/// Parses an `OTEL_PROPAGATORS`-style list. Known non-trace entries (`baggage`, `none`) are
/// skipped; anything else is an error.
pub fn parse_propagators(list: &str) -> Result<Vec<Propagator>, UnknownPropagator> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if matches!(item, "baggage" | "none") {
            continue;
        }
        let p: Propagator = item.parse()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Propagator; 3] = Propagator::ALL;

    fn headers(pairs: &[(&str, &str)]) -> ContextHeaders {
        ContextHeaders::from_pairs(pairs)
    }

    #[test]
    fn b3_multi_64bit_trace_id_is_left_padded() {
        let h = headers(&[
            ("X-B3-TraceId", "463ac35c9f6413ad"),
            ("X-B3-SpanId", "a2fb4a1d1a96d312"),
            ("X-B3-Sampled", "1"),
        ]);
        let ctx = extract(&h, &ALL).expect("valid B3 context");
        let (trace, span) = ctx.ids.expect("ids");
        assert_eq!(trace.to_string(), "0000000000000000463ac35c9f6413ad");
        assert_eq!(span.to_string(), "a2fb4a1d1a96d312");
        assert_eq!(ctx.sampling, Sampling::Sampled);
        assert_eq!(ctx.source, Propagator::B3Multi);
    }

    #[test]
    fn b3_multi_128bit_and_flags_debug() {
        let h = headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-flags", "1"),
        ]);
        let ctx = extract(&h, &ALL).unwrap();
        assert_eq!(
            ctx.ids.unwrap().0.to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(ctx.sampling, Sampling::Debug);
    }

    #[test]
    fn b3_sampled_zero_is_not_sampled() {
        let h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]);
        assert_eq!(extract(&h, &ALL).unwrap().sampling, Sampling::NotSampled);
        let lone = headers(&[("x-b3-sampled", "0")]);
        let ctx = extract(&lone, &ALL).unwrap();
        assert_eq!(ctx.ids, None);
        assert_eq!(ctx.sampling, Sampling::NotSampled);
    }

    #[test]
    fn malformed_b3_is_ignored() {
        for (t, s) in [
            ("463ac35c9f6413a", "a2fb4a1d1a96d312"),  // 15 digits
            ("463ac35c9f6413ag", "a2fb4a1d1a96d312"), // non-hex
            ("0000000000000000", "a2fb4a1d1a96d312"), // zero trace
            ("463ac35c9f6413ad", "0000000000000000"), // zero span
            ("463ac35c9f6413ad", "a2fb4a1d1a96d31"),  // short span
            ("463ac35c9f6413ad463ac35c9f6413ad00", "a2fb4a1d1a96d312"), // 34 digits
        ] {
            let h = headers(&[("x-b3-traceid", t), ("x-b3-spanid", s)]);
            assert_eq!(extract(&h, &[Propagator::B3Multi]), None, "{t}/{s}");
        }
        let only_trace = headers(&[("x-b3-traceid", "463ac35c9f6413ad"), ("x-b3-sampled", "1")]);
        assert_eq!(extract(&only_trace, &[Propagator::B3Multi]), None);
    }

    #[test]
    fn b3_single_forms() {
        let full = headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        let ctx = extract(&full, &ALL).unwrap();
        assert_eq!(ctx.source, Propagator::B3Single);
        assert_eq!(ctx.ids.unwrap().1.to_string(), "e457b5a2e4d86bd1");
        assert_eq!(ctx.sampling, Sampling::Sampled);

        let short = headers(&[("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312")]);
        let ctx = extract(&short, &ALL).unwrap();
        assert_eq!(
            ctx.ids.unwrap().0.to_string(),
            "0000000000000000463ac35c9f6413ad"
        );
        assert_eq!(ctx.sampling, Sampling::Deferred);

        let debug = headers(&[("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-d")]);
        assert_eq!(extract(&debug, &ALL).unwrap().sampling, Sampling::Debug);

        let deny = headers(&[("b3", "0")]);
        let ctx = extract(&deny, &ALL).unwrap();
        assert_eq!((ctx.ids, ctx.sampling), (None, Sampling::NotSampled));

        for bad in [
            "463ac35c9f6413ad-a2fb4a1d1a96d312-x",
            "463ac35c9f6413ad",
            "463ac35c9f6413ad-a2fb4a1d1a96d312-1-zz",
            "-",
            "",
            "463ac35c9f6413ad-a2fb4a1d1a96d312-1-05e3ac9a4f6e3b90-extra",
        ] {
            let h = headers(&[("b3", bad)]);
            assert_eq!(extract(&h, &[Propagator::B3Single]), None, "{bad:?}");
        }
    }

    #[test]
    fn traceparent_parsing() {
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let ctx = extract(&h, &ALL).unwrap();
        assert_eq!(ctx.source, Propagator::TraceContext);
        assert_eq!(ctx.sampling, Sampling::Sampled);
        let unsampled = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        assert_eq!(
            extract(&unsampled, &ALL).unwrap().sampling,
            Sampling::NotSampled
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let h = headers(&[("traceparent", bad)]);
            assert_eq!(extract(&h, &ALL), None, "{bad}");
        }
        let future = headers(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
        )]);
        assert!(extract(&future, &ALL).is_some());
    }

    #[test]
    fn order_decides_and_falls_through_malformed() {
        let h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ]);
        let w3c_first = [Propagator::TraceContext, Propagator::B3Multi];
        assert_eq!(
            extract(&h, &w3c_first).unwrap().source,
            Propagator::TraceContext
        );
        assert_eq!(extract(&h, &ALL).unwrap().source, Propagator::B3Multi);
        let broken_b3 = headers(&[
            ("x-b3-traceid", "nothex"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ]);
        assert_eq!(
            extract(&broken_b3, &ALL).unwrap().source,
            Propagator::TraceContext
        );
        assert_eq!(extract(&broken_b3, &[Propagator::B3Multi]), None);
    }

    /// Every row of the shared rules table, through the real head parser and the extractor.
    #[test]
    fn every_row_of_the_rules_table() {
        use crate::trace::context_cases::{CASES, Decision, request_head};
        let decision = |s: Sampling| match s {
            Sampling::Sampled => Decision::Sampled,
            Sampling::NotSampled => Decision::NotSampled,
            Sampling::Debug => Decision::Debug,
            Sampling::Deferred => Decision::Deferred,
        };
        let mut failed = Vec::new();
        for case in CASES {
            let order = if case.propagators.is_empty() {
                ALL.to_vec()
            } else {
                parse_propagators(case.propagators).expect("a valid propagator list")
            };
            let raw = request_head(case, "/rules", "example");
            let head = crate::protocol::http1::parse::parse_head(raw.clone().into(), false, 0);
            let got = match extract(&head.context, &order) {
                None => "no context".to_owned(),
                Some(Extracted {
                    ids: None,
                    sampling,
                    ..
                }) => {
                    format!("decision {:?} without ids", decision(sampling))
                }
                Some(Extracted {
                    ids: Some((t, s)),
                    sampling,
                    ..
                }) => format!("trace {t} parent {s} {:?}", decision(sampling)),
            };
            if got != case.outcome.text() {
                failed.push(format!(
                    "{}: expected {}, got {got}\n{raw:?}",
                    case.name,
                    case.outcome.text()
                ));
            }
        }
        assert!(
            failed.is_empty(),
            "{} rows differ:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }

    #[test]
    fn propagation_flags_give_the_kernel_the_order() {
        use tracer_common::{
            PROPAGATE_B3 as B3, PROPAGATE_TRACECONTEXT as TC, PROPAGATE_TRACECONTEXT_FIRST as FIRST,
        };
        let flags = |list: &str| propagation_flags(&parse_propagators(list).unwrap());
        assert_eq!(flags("b3multi,b3,tracecontext"), B3 | TC);
        assert_eq!(flags("b3,tracecontext"), B3 | TC);
        assert_eq!(flags("tracecontext,b3multi"), B3 | TC | FIRST);
        assert_eq!(flags("b3multi"), B3);
        assert_eq!(flags("tracecontext"), TC | FIRST);
        assert_eq!(flags("none"), 0);
    }

    #[test]
    fn propagator_list() {
        assert_eq!(
            parse_propagators("tracecontext, baggage,b3multi").unwrap(),
            vec![Propagator::TraceContext, Propagator::B3Multi]
        );
        assert!(parse_propagators("b3,jaeger").is_err());
    }
}
