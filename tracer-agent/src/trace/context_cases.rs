//! The trace-context rules as one table of request heads and what each must yield, shared by
//! every reader of trace context: the agent's extractor (`trace::context`), the kernel's
//! request-head scanner compiled for the host (`kernel::host_tests`), and the root test that
//! sends each row with a context through a traced chain in every write mode
//! (`tests/tests/context_rules.rs`). Plain Rust without dependencies, included by `#[path]`.
//!
//! The rules (README "Trace context"): header names compare case-insensitively and the first
//! occurrence of a header wins; up to `CONTEXT_OWS_MAX` spaces and tabs around a value are
//! dropped. Propagators are tried in the `OTEL_PROPAGATORS` order (default
//! `b3multi,b3,tracecontext`); `b3` and `b3multi` both name the B3 propagator, which reads the
//! single `b3` header first and falls back to `x-b3-*` when it is absent or malformed. A
//! malformed context is refused and the next propagator is tried.

/// What the sender decided about sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Sampled,
    NotSampled,
    /// `x-b3-flags: 1`, `b3: …-d`: exported.
    Debug,
    /// No decision in the request: the local sampler decides.
    Deferred,
}

/// What a head yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No usable context: a new trace, the local sampler decides.
    NoContext,
    /// A sampling decision without ids (`b3: 0`, a lone `x-b3-sampled`): a new trace with it.
    DecisionOnly(Decision),
    /// A context: the trace id (32 lowercase hex, 64-bit B3 ids left-padded), the sender's span
    /// id (the parent of the request's SERVER span) and the decision.
    Context {
        trace: &'static str,
        parent: &'static str,
        decision: Decision,
    },
}

/// One row: a request's context headers (written `name:value` in this order, see
/// [`request_head`]) and the outcome.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    /// `OTEL_PROPAGATORS`; empty for the default.
    pub propagators: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    pub outcome: Outcome,
}

macro_rules! t64 {
    () => {
        "463ac35c9f6413ad"
    };
}
macro_rules! t128 {
    () => {
        "80f198ee56343ba864fe8b2a57d3eff7"
    };
}
macro_rules! span {
    () => {
        "e457b5a2e4d86bd1"
    };
}
macro_rules! parent {
    () => {
        "05e3ac9a4f6e3b90"
    };
}
macro_rules! w3c_trace {
    () => {
        "4bf92f3577b34da6a3ce929d0e0e4736"
    };
}
macro_rules! w3c_span {
    () => {
        "00f067aa0ba902b7"
    };
}

const T64_PADDED: &str = concat!("0000000000000000", t64!());
const T128: &str = t128!();
const SPAN: &str = span!();
const W3C_TRACE: &str = w3c_trace!();
const W3C_SPAN: &str = w3c_span!();
const TRACEPARENT: &str = concat!("00-", w3c_trace!(), "-", w3c_span!(), "-01");

const fn ctx(trace: &'static str, parent: &'static str, decision: Decision) -> Outcome {
    Outcome::Context {
        trace,
        parent,
        decision,
    }
}

const fn row(
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
    outcome: Outcome,
) -> Case {
    Case {
        name,
        propagators: "",
        headers,
        outcome,
    }
}

const fn ordered(
    name: &'static str,
    propagators: &'static str,
    headers: &'static [(&'static str, &'static str)],
    outcome: Outcome,
) -> Case {
    Case {
        name,
        propagators,
        headers,
        outcome,
    }
}

use Decision::{Deferred, NotSampled, Sampled};
use Outcome::{DecisionOnly, NoContext};

/// Every row.
pub const CASES: &[Case] = &[
    // --- B3 multi-header ---
    row(
        "multi 64-bit id, sampled 1",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "1"),
        ],
        ctx(T64_PADDED, SPAN, Sampled),
    ),
    row(
        "multi 128-bit id, sampled 1",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "1"),
        ],
        ctx(T128, SPAN, Sampled),
    ),
    row(
        "multi without a decision",
        &[("x-b3-traceid", t64!()), ("x-b3-spanid", span!())],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "multi sampled 0",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "0"),
        ],
        ctx(T64_PADDED, SPAN, NotSampled),
    ),
    row(
        "multi sampled true",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "true"),
        ],
        ctx(T128, SPAN, Sampled),
    ),
    row(
        "multi sampled false",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "false"),
        ],
        ctx(T128, SPAN, NotSampled),
    ),
    row(
        "multi flags 1 is debug",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-flags", "1"),
        ],
        ctx(T128, SPAN, Decision::Debug),
    ),
    row(
        "multi flags 1 beats sampled 0",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ],
        ctx(T128, SPAN, Decision::Debug),
    ),
    row(
        "multi flags other than 1 are ignored",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-flags", "0"),
        ],
        ctx(T128, SPAN, Deferred),
    ),
    row(
        "multi sampled d is refused",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "d"),
        ],
        NoContext,
    ),
    row(
        "multi sampled yes is refused",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "yes"),
        ],
        NoContext,
    ),
    row(
        "multi sampled TRUE is refused",
        &[
            ("x-b3-traceid", t128!()),
            ("x-b3-spanid", span!()),
            ("x-b3-sampled", "TRUE"),
        ],
        NoContext,
    ),
    row(
        "multi uppercase trace id",
        &[
            ("x-b3-traceid", "80F198EE56343BA864FE8B2A57D3EFF7"),
            ("x-b3-spanid", span!()),
        ],
        ctx(T128, SPAN, Deferred),
    ),
    row(
        "multi mixed-case span id",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", "E457b5A2e4D86bd1"),
        ],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "multi header names in any case",
        &[
            ("X-B3-TraceId", t64!()),
            ("X-B3-SPANID", span!()),
            ("X-b3-Sampled", "1"),
        ],
        ctx(T64_PADDED, SPAN, Sampled),
    ),
    row(
        "multi 15-digit trace id",
        &[
            ("x-b3-traceid", "463ac35c9f6413a"),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi 17-digit trace id",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad0"),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi 31-digit trace id",
        &[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff"),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi 34-digit trace id",
        &[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff711"),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi 15-digit span id",
        &[("x-b3-traceid", t64!()), ("x-b3-spanid", "e457b5a2e4d86bd")],
        NoContext,
    ),
    row(
        "multi 32-digit span id",
        &[("x-b3-traceid", t64!()), ("x-b3-spanid", t128!())],
        NoContext,
    ),
    row(
        "multi all-zero 64-bit trace id",
        &[
            ("x-b3-traceid", "0000000000000000"),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi all-zero 128-bit trace id",
        &[
            ("x-b3-traceid", "00000000000000000000000000000000"),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi all-zero span id",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", "0000000000000000"),
        ],
        NoContext,
    ),
    row(
        "multi non-hex trace id",
        &[
            ("x-b3-traceid", "463ac35c9f6413ag"),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi non-hex span id",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", "e457b5a2e4d86bd-"),
        ],
        NoContext,
    ),
    row(
        "multi missing span id",
        &[("x-b3-traceid", t64!()), ("x-b3-sampled", "1")],
        NoContext,
    ),
    row(
        "multi missing trace id",
        &[("x-b3-spanid", span!()), ("x-b3-sampled", "1")],
        NoContext,
    ),
    row(
        "multi empty trace id",
        &[("x-b3-traceid", ""), ("x-b3-spanid", span!())],
        NoContext,
    ),
    row(
        "multi parent span id is not read",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
            ("x-b3-parentspanid", "not-an-id"),
            ("x-b3-sampled", "1"),
        ],
        ctx(T64_PADDED, SPAN, Sampled),
    ),
    row(
        "lone x-b3-sampled 0 denies",
        &[("x-b3-sampled", "0")],
        DecisionOnly(NotSampled),
    ),
    row(
        "lone x-b3-sampled 1 accepts",
        &[("x-b3-sampled", "1")],
        DecisionOnly(Sampled),
    ),
    row(
        "lone x-b3-flags 1 is debug",
        &[("x-b3-flags", "1")],
        DecisionOnly(Decision::Debug),
    ),
    row(
        "multi spaces and tabs around values",
        &[
            ("x-b3-traceid", "  \t463ac35c9f6413ad\t "),
            ("x-b3-spanid", "\te457b5a2e4d86bd1"),
            ("x-b3-sampled", "1   "),
        ],
        ctx(T64_PADDED, SPAN, Sampled),
    ),
    row(
        "multi one space after the colon, as usual",
        &[
            ("x-b3-traceid", concat!(" ", t64!())),
            ("x-b3-spanid", concat!(" ", span!())),
        ],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "multi more than 8 spaces before a value",
        &[
            ("x-b3-traceid", concat!("         ", t64!())),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi 8 spaces before and after a value",
        &[
            ("x-b3-traceid", concat!("        ", t64!(), "        ")),
            ("x-b3-spanid", span!()),
        ],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "multi duplicated trace id: the first wins",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
            ("x-b3-traceid", t128!()),
        ],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "multi duplicated trace id, first malformed: refused",
        &[
            ("x-b3-traceid", "nothex"),
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    row(
        "multi duplicated empty trace id first: refused",
        &[
            ("x-b3-traceid", ""),
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
        ],
        NoContext,
    ),
    // --- B3 single header ---
    row(
        "single 64-bit trace and span",
        &[("b3", concat!(t64!(), "-", span!()))],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "single 128-bit, sampled",
        &[("b3", concat!(t128!(), "-", span!(), "-1"))],
        ctx(T128, SPAN, Sampled),
    ),
    row(
        "single not sampled",
        &[("b3", concat!(t128!(), "-", span!(), "-0"))],
        ctx(T128, SPAN, NotSampled),
    ),
    row(
        "single debug",
        &[("b3", concat!(t64!(), "-", span!(), "-d"))],
        ctx(T64_PADDED, SPAN, Decision::Debug),
    ),
    row(
        "single with parent span id",
        &[("b3", concat!(t128!(), "-", span!(), "-1-", parent!()))],
        ctx(T128, SPAN, Sampled),
    ),
    row(
        "single 64-bit with parent span id",
        &[("b3", concat!(t64!(), "-", span!(), "-0-", parent!()))],
        ctx(T64_PADDED, SPAN, NotSampled),
    ),
    row(
        "single sampled true is refused",
        &[("b3", concat!(t128!(), "-", span!(), "-true"))],
        NoContext,
    ),
    row(
        "single sampled x is refused",
        &[("b3", concat!(t128!(), "-", span!(), "-x"))],
        NoContext,
    ),
    row(
        "single parent without a state is refused",
        &[("b3", concat!(t128!(), "-", span!(), "-", parent!()))],
        NoContext,
    ),
    row("b3: 0 denies", &[("b3", "0")], DecisionOnly(NotSampled)),
    row("b3: 1 accepts", &[("b3", "1")], DecisionOnly(Sampled)),
    row(
        "b3: d is debug",
        &[("b3", "d")],
        DecisionOnly(Decision::Debug),
    ),
    row("b3: 2 is refused", &[("b3", "2")], NoContext),
    row("b3: true is refused", &[("b3", "true")], NoContext),
    row("empty b3 is refused", &[("b3", "")], NoContext),
    row("single missing span id", &[("b3", t128!())], NoContext),
    row(
        "single trailing dash",
        &[("b3", concat!(t64!(), "-", span!(), "-"))],
        NoContext,
    ),
    row(
        "single uppercase ids",
        &[("b3", "80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1-1")],
        ctx(T128, SPAN, Sampled),
    ),
    row(
        "single all-zero trace id",
        &[("b3", concat!("0000000000000000-", span!(), "-1"))],
        NoContext,
    ),
    row(
        "single all-zero span id",
        &[("b3", concat!(t128!(), "-0000000000000000-1"))],
        NoContext,
    ),
    row(
        "single all-zero parent span id",
        &[("b3", concat!(t128!(), "-", span!(), "-1-0000000000000000"))],
        NoContext,
    ),
    row(
        "single short parent span id",
        &[("b3", concat!(t128!(), "-", span!(), "-1-05e3ac9a4f6e3b9"))],
        NoContext,
    ),
    row(
        "single non-hex parent span id",
        &[("b3", concat!(t128!(), "-", span!(), "-1-05e3ac9a4f6e3bzz"))],
        NoContext,
    ),
    row(
        "single extra field",
        &[("b3", concat!(t128!(), "-", span!(), "-1-", parent!(), "-1"))],
        NoContext,
    ),
    row(
        "single 20-digit trace id",
        &[("b3", concat!("463ac35c9f6413ad1234-", span!(), "-1"))],
        NoContext,
    ),
    row(
        "single 15-digit span id",
        &[("b3", concat!(t128!(), "-e457b5a2e4d86bd-1"))],
        NoContext,
    ),
    row(
        "single non-hex trace id",
        &[("b3", concat!("463ac35c9f6413ag-", span!()))],
        NoContext,
    ),
    row(
        "single spaces and tabs around the value",
        &[("b3", concat!(" \t", t64!(), "-", span!(), "-1  \t"))],
        ctx(T64_PADDED, SPAN, Sampled),
    ),
    row(
        "single duplicated: the first wins",
        &[
            ("b3", concat!(t64!(), "-", span!(), "-1")),
            ("b3", concat!(t128!(), "-", parent!(), "-0")),
        ],
        ctx(T64_PADDED, SPAN, Sampled),
    ),
    // --- W3C traceparent ---
    row(
        "traceparent sampled",
        &[("traceparent", TRACEPARENT)],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    row(
        "traceparent not sampled",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-", w3c_span!(), "-00"),
        )],
        ctx(W3C_TRACE, W3C_SPAN, NotSampled),
    ),
    row(
        "traceparent flags 03: bit 0 samples",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-", w3c_span!(), "-03"),
        )],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    row(
        "traceparent flags 02: bit 0 clear",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-", w3c_span!(), "-02"),
        )],
        ctx(W3C_TRACE, W3C_SPAN, NotSampled),
    ),
    row(
        "traceparent uppercase trace id is refused",
        &[(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )],
        NoContext,
    ),
    row(
        "traceparent uppercase span id is refused",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-00F067AA0BA902B7-01"),
        )],
        NoContext,
    ),
    row(
        "traceparent uppercase flags are refused",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-", w3c_span!(), "-0A"),
        )],
        NoContext,
    ),
    row(
        "traceparent version ff is refused",
        &[(
            "traceparent",
            concat!("ff-", w3c_trace!(), "-", w3c_span!(), "-01"),
        )],
        NoContext,
    ),
    row(
        "traceparent version 00 with more fields is refused",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-", w3c_span!(), "-01-extra"),
        )],
        NoContext,
    ),
    row(
        "traceparent future version with more fields",
        &[(
            "traceparent",
            concat!("01-", w3c_trace!(), "-", w3c_span!(), "-01-what"),
        )],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    row(
        "traceparent future version, 55 characters",
        &[(
            "traceparent",
            concat!("cc-", w3c_trace!(), "-", w3c_span!(), "-00"),
        )],
        ctx(W3C_TRACE, W3C_SPAN, NotSampled),
    ),
    row(
        "traceparent future version, no dash after the flags",
        &[(
            "traceparent",
            concat!("01-", w3c_trace!(), "-", w3c_span!(), "-01what"),
        )],
        NoContext,
    ),
    row(
        "traceparent one-digit version",
        &[(
            "traceparent",
            concat!("0-", w3c_trace!(), "-", w3c_span!(), "-01"),
        )],
        NoContext,
    ),
    row(
        "traceparent non-hex version",
        &[(
            "traceparent",
            concat!("0x-", w3c_trace!(), "-", w3c_span!(), "-01"),
        )],
        NoContext,
    ),
    row(
        "traceparent all-zero trace id",
        &[(
            "traceparent",
            concat!("00-00000000000000000000000000000000-", w3c_span!(), "-01"),
        )],
        NoContext,
    ),
    row(
        "traceparent all-zero span id",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-0000000000000000-01"),
        )],
        NoContext,
    ),
    row(
        "traceparent 64-bit trace id",
        &[(
            "traceparent",
            concat!("00-", t64!(), "-", w3c_span!(), "-01"),
        )],
        NoContext,
    ),
    row(
        "traceparent non-hex flags",
        &[(
            "traceparent",
            concat!("00-", w3c_trace!(), "-", w3c_span!(), "-0g"),
        )],
        NoContext,
    ),
    row(
        "traceparent wrong separators",
        &[(
            "traceparent",
            concat!("00_", w3c_trace!(), "_", w3c_span!(), "_01"),
        )],
        NoContext,
    ),
    row(
        "traceparent garbage",
        &[("traceparent", "garbage")],
        NoContext,
    ),
    row(
        "traceparent spaces and tabs around the value",
        &[(
            "traceparent",
            concat!("\t ", "00-", w3c_trace!(), "-", w3c_span!(), "-01", " "),
        )],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    row(
        "traceparent duplicated: the first wins",
        &[
            ("traceparent", TRACEPARENT),
            ("traceparent", concat!("00-", t128!(), "-", span!(), "-00")),
        ],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    // --- several formats in one request ---
    row(
        "b3 single beats x-b3-*",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", parent!()),
            ("x-b3-sampled", "0"),
            ("b3", concat!(t128!(), "-", span!(), "-1")),
        ],
        ctx(T128, SPAN, Sampled),
    ),
    row(
        "malformed b3 single falls back to x-b3-*",
        &[
            ("b3", concat!(t128!(), "-", span!(), "-x")),
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
        ],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "b3: 0 beats x-b3-* ids",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
            ("b3", "0"),
        ],
        DecisionOnly(NotSampled),
    ),
    row(
        "b3 beats traceparent by default",
        &[
            ("traceparent", TRACEPARENT),
            ("b3", concat!(t128!(), "-", span!(), "-0")),
        ],
        ctx(T128, SPAN, NotSampled),
    ),
    row(
        "x-b3-* beats traceparent by default",
        &[
            ("traceparent", TRACEPARENT),
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
        ],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    row(
        "malformed B3 falls back to traceparent",
        &[
            ("x-b3-traceid", "nothex"),
            ("x-b3-spanid", span!()),
            ("b3", "bad"),
            ("traceparent", TRACEPARENT),
        ],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    row(
        "b3: 0 beats traceparent by default",
        &[("traceparent", TRACEPARENT), ("b3", "0")],
        DecisionOnly(NotSampled),
    ),
    ordered(
        "traceparent first when listed first",
        "tracecontext,b3",
        &[
            ("b3", concat!(t128!(), "-", span!(), "-0")),
            ("traceparent", TRACEPARENT),
        ],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    ordered(
        "traceparent before x-b3-* when listed first",
        "tracecontext,b3multi",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
            ("traceparent", TRACEPARENT),
        ],
        ctx(W3C_TRACE, W3C_SPAN, Sampled),
    ),
    ordered(
        "malformed traceparent listed first falls back to B3",
        "tracecontext,b3",
        &[
            (
                "traceparent",
                concat!("ff-", w3c_trace!(), "-", w3c_span!(), "-01"),
            ),
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", span!()),
        ],
        ctx(T64_PADDED, SPAN, Deferred),
    ),
    ordered(
        "b3multi alone still reads the single b3 header first",
        "b3multi",
        &[
            ("x-b3-traceid", t64!()),
            ("x-b3-spanid", parent!()),
            ("b3", concat!(t128!(), "-", span!(), "-1")),
        ],
        ctx(T128, SPAN, Sampled),
    ),
    ordered(
        "B3 not listed: B3 headers are not read",
        "tracecontext",
        &[("x-b3-traceid", t64!()), ("x-b3-spanid", span!())],
        NoContext,
    ),
    ordered(
        "tracecontext not listed: traceparent is not read",
        "b3",
        &[("traceparent", TRACEPARENT)],
        NoContext,
    ),
];

/// A request head for `path` carrying `case`'s headers after a `Host` header, each written
/// `name:value` with the value as the row gives it (so a row controls every byte after the
/// colon: no space, spaces, tabs).
#[must_use]
pub fn request_head(case: &Case, path: &str, host: &str) -> String {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in case.headers {
        head.push_str(name);
        head.push(':');
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

impl Decision {
    /// `TraceCtx::sampled` in the kernel: 1 sampled (debug too: the kernel keeps no debug
    /// state, it only samples), 0 not sampled, 2 no decision.
    #[must_use]
    pub fn kernel(self) -> u32 {
        match self {
            Self::Sampled | Self::Debug => 1,
            Self::NotSampled => 0,
            Self::Deferred => 2,
        }
    }
}

impl Outcome {
    /// The outcome as text, for comparing with what a reader produced.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::NoContext => "no context".to_owned(),
            Self::DecisionOnly(d) => format!("decision {d:?} without ids"),
            Self::Context {
                trace,
                parent,
                decision,
            } => format!("trace {trace} parent {parent} {decision:?}"),
        }
    }

    /// What the kernel's scanner should report: trace id and parent span id as hex (zeros for a
    /// decision without ids) and `Decision::kernel`; `None` for no context.
    #[must_use]
    pub fn kernel(&self) -> Option<(String, String, u32)> {
        match self {
            Self::NoContext => None,
            Self::DecisionOnly(d) => Some(("0".repeat(32), "0".repeat(16), d.kernel())),
            Self::Context {
                trace,
                parent,
                decision,
            } => Some(((*trace).to_owned(), (*parent).to_owned(), decision.kernel())),
        }
    }
}
