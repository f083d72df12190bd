//! Assertion helpers: every failure says what was expected and dumps the spans received.

use crate::otlp::{Span, dump};

/// `assert!` whose message ends with the dump of `spans`.
#[macro_export]
macro_rules! check {
    ($spans:expr, $cond:expr, $($fmt:tt)+) => {
        assert!($cond, "{}\nspans received:\n{}", format!($($fmt)+), $crate::otlp::dump($spans))
    };
}

/// `assert_eq!(actual, expected)` whose message names the value and dumps `spans`.
#[macro_export]
macro_rules! check_eq {
    // `match` keeps temporaries in the arguments alive, as in `assert_eq!`.
    ($spans:expr, $actual:expr, $expected:expr, $($fmt:tt)+) => {
        match (&$actual, &$expected) {
            (actual, expected) => assert!(
                actual == expected,
                "{}: expected {:?}, got {:?}\nspans received:\n{}",
                format!($($fmt)+),
                expected,
                actual,
                $crate::otlp::dump($spans)
            ),
        }
    };
}

/// The single span matching `pred`; panics (naming `what`) when there are none or several.
///
/// # Panics
/// Unless exactly one span matches.
#[must_use]
pub fn only<'a>(spans: &'a [Span], what: &str, pred: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pred(s)).collect();
    assert!(
        found.len() == 1,
        "expected exactly one {what}, found {}\nspans received:\n{}",
        found.len(),
        dump(spans)
    );
    found[0]
}

/// Whether some span of `kind` has `trace_id`.
#[must_use]
pub fn has(spans: &[Span], kind: &str, trace_id: &str) -> bool {
    spans
        .iter()
        .any(|s| s.kind == kind && s.trace_id == trace_id)
}

/// `pid` as the resource's `process.pid`.
#[must_use]
pub fn of_pid(span: &Span, pid: u32) -> bool {
    span.resource
        .get("process.pid")
        .and_then(serde_json::Value::as_i64)
        == Some(i64::from(pid))
}

/// A 64-bit B3 trace id as the collector's Zipkin receiver stores it: left-padded to 128 bits.
#[must_use]
pub fn padded(trace_id: &str) -> String {
    format!("{trace_id:0>32}")
}

/// What an inbound request must have produced (one SERVER span).
pub struct ServerSpan<'a> {
    pub trace_id: &'a str,
    /// The incoming span id; "" when the request carried no context.
    pub parent: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: i64,
    /// `tracer.context.source`: "b3multi", "b3", "tracecontext" or "none".
    pub source: &'a str,
    pub pid: u32,
    pub port: u16,
}

impl ServerSpan<'_> {
    /// Checks `span` against the expectation (and the contract's attribute names).
    pub fn check(&self, spans: &[Span], span: &Span, label: &str) {
        check_eq!(spans, span.kind.as_str(), "SERVER", "{label}: kind");
        check_eq!(
            spans,
            span.trace_id.as_str(),
            self.trace_id,
            "{label}: trace id"
        );
        check_eq!(
            spans,
            span.parent_span_id.as_str(),
            self.parent,
            "{label}: parent span id"
        );
        check!(
            spans,
            span.span_id.len() == 16 && span.span_id != "0000000000000000",
            "{label}: span id must be 16 hex digits, not zero: {span}"
        );
        check!(
            spans,
            span.span_id != self.parent,
            "{label}: the SERVER span needs its own id, not the incoming one: {span}"
        );
        check_eq!(
            spans,
            span.name.as_str(),
            self.method,
            "{label}: span name (the method)"
        );
        check_eq!(
            spans,
            span.attr_str("http.request.method"),
            Some(self.method),
            "{label}: http.request.method"
        );
        check_eq!(
            spans,
            span.attr_str("url.path"),
            Some(self.path),
            "{label}: url.path"
        );
        check_eq!(
            spans,
            span.attr_i64("http.response.status_code"),
            Some(self.status),
            "{label}: http.response.status_code"
        );
        check_eq!(
            spans,
            span.attr_i64("server.port"),
            Some(i64::from(self.port)),
            "{label}: server.port (from Host)"
        );
        check_eq!(
            spans,
            span.attr_str("tracer.context.source"),
            Some(self.source),
            "{label}: tracer.context.source"
        );
        let error = self.status >= 500;
        check_eq!(
            spans,
            span.status_code == "ERROR",
            error,
            "{label}: status ERROR exactly for 5xx ({})",
            span.status_code
        );
        if error {
            check_eq!(
                spans,
                span.attr_str("error.type"),
                Some(self.status.to_string().as_str()),
                "{label}: error.type"
            );
        }
        check!(
            spans,
            of_pid(span, self.pid),
            "{label}: resource process.pid must be {}: {span}",
            self.pid
        );
        check!(
            spans,
            span.start_unix_nanos > 0 && span.start_unix_nanos <= span.end_unix_nanos,
            "{label}: start <= end: {span}"
        );
    }
}
