//! Root: the kernel and the agent read trace context by the same rules. Every row of the shared
//! rules table (`tracer-agent/src/trace/context_cases.rs`) that carries a context is sent,
//! header bytes exactly as the row gives them, through front -> back (Python services) traced by
//! one agent per write mode:
//!
//! - read-only, the front forwarding the headers it got (the reference: the agent alone);
//! - rewrite, the same front: the kernel reads the outgoing head to find the request that caused
//!   it and rewrites the span-id fields;
//! - inject, a front that forwards nothing: the context on the back request is the one the
//!   kernel read from the front's request, so a kernel that read another trace id than the agent
//!   would put the back span, and the front CLIENT span, in another trace.
//!
//! In every mode each row gives the same tree: the front SERVER span in the row's trace under the
//! row's parent span, the front CLIENT span under it, the back SERVER span in the same trace.
//! The one link that differs is the one the write side exists for: the back SERVER span is under
//! the front CLIENT span with the write side on, under the caller's span (as forwarded) without.
//! Rows whose decision is "not sampled" export nothing in any mode: the agent counts their nine
//! exchanges as unsampled, and none of their spans reaches the receiver.

#[expect(
    dead_code,
    reason = "the table's helpers for the kernel and agent unit tests are not used here"
)]
#[path = "../../tracer-agent/src/trace/context_cases.rs"]
mod context_cases;

use std::time::{Duration, Instant};

use context_cases::{CASES, Case, Decision, Outcome, request_head};
use tracer_tests::expect::{of_pid, only};
use tracer_tests::harness::{Agent, HttpConn, Lang, Receiver, Span, free_port, root_test};
use tracer_tests::observe;
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(30);

/// Exchanges per row: front SERVER, front CLIENT, back SERVER.
const HOPS: u64 = 3;

/// A row the test sends: its index in the table (in the request's query, `row=N`, so that the
/// spans of rows sharing a trace id are told apart) and the row.
type Row = (usize, &'static Case);

/// The rows with a context (and the default propagators, which the agents use).
fn rows_with_context() -> Vec<Row> {
    CASES
        .iter()
        .enumerate()
        .filter(|(_, c)| c.propagators.is_empty())
        .filter(|(_, c)| {
            matches!(
                c.outcome,
                Outcome::Context { .. } | Outcome::DecisionOnly(Decision::NotSampled)
            )
        })
        .collect()
}

fn exported(case: &Case) -> bool {
    match case.outcome {
        Outcome::Context { decision, .. } => decision != Decision::NotSampled,
        _ => false,
    }
}

/// The spans of one row's request in one mode.
struct Hops {
    server: Span,
    client: Span,
    back: Span,
}

/// The query a span's request carried.
fn query_of(s: &Span) -> String {
    if s.kind == "CLIENT" {
        let url = s.attr_str("url.full").unwrap_or_default();
        url.split_once('?')
            .map(|(_, q)| q.to_owned())
            .unwrap_or_default()
    } else {
        s.attr_str("url.query").unwrap_or_default().to_owned()
    }
}

/// Sends every row through front -> back traced by an agent in `mode`; returns each exported
/// row's spans, after checking that the unexported rows exported nothing.
fn run(mode: &str, rows: &[Row]) -> Vec<(Row, Hops)> {
    let rx = Receiver::start_blocking();
    let back = Lang::Python.start(free_port(), None, &[]);
    let forward = if mode == "inject" { "none" } else { "context" };
    let front = Lang::Python.start(free_port(), Some(&back.url()), &[("FORWARD", forward)]);
    let agent = Agent::start_for(
        &rx,
        "grpc",
        &[front.pid(), back.pid()],
        &["--write-mode", mode],
    );
    let metrics = agent.metrics_port().expect("start_for sets a metrics port");

    for &(i, case) in rows {
        let mut conn = HttpConn::connect(front.port());
        let head = request_head(
            case,
            &format!("/call/headers?row={i}"),
            &format!("127.0.0.1:{}", front.port()),
        );
        conn.send_raw(&["GET"], head.as_bytes());
        let r = conn.read_response();
        assert_eq!(
            r.status,
            200,
            "{mode}: row {i} ({}) through the front: {}",
            case.name,
            r.text()
        );
    }

    let sent: Vec<Row> = rows.iter().copied().filter(|(_, c)| exported(c)).collect();
    let hidden = rows.len() - sent.len();
    let pick = |spans: &[Span], kind: &str, pid: u32, i: usize| {
        let q = format!("row={i}");
        only(
            spans,
            &format!("{mode}: {kind} span of pid {pid}, {q}"),
            |x| x.kind == kind && of_pid(x, pid) && query_of(x) == q,
        )
        .clone()
    };
    let spans = rx.wait_for_named(
        &format!("{mode}: front SERVER + CLIENT and back SERVER spans of every sampled row"),
        |s| {
            sent.iter().all(|(i, _)| {
                let q = format!("row={i}");
                let has = |kind: &str, pid: u32| {
                    s.iter()
                        .any(|x| x.kind == kind && of_pid(x, pid) && query_of(x) == q)
                };
                has("SERVER", front.pid())
                    && has("CLIENT", front.pid())
                    && has("SERVER", back.pid())
            })
        },
        WAIT,
    );

    // The unsampled rows: counted as such (a positive wait, not a pause), and none exported.
    let want = HOPS * hidden as u64;
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = observe::scrape(metrics);
        let n = observe::counter(&text, "tracer_spans_unsampled_total").unwrap_or(0);
        if n >= want || Instant::now() >= deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    check_eq!(
        &spans,
        observe::counter(&text, "tracer_spans_unsampled_total"),
        Some(want),
        "{mode}: {hidden} not-sampled rows, {HOPS} exchanges each, counted as unsampled"
    );
    let all = rx.spans();
    for &(i, case) in rows.iter().filter(|(_, c)| !exported(c)) {
        let q = format!("row={i}");
        check!(
            &all,
            all.iter().all(|x| query_of(x) != q),
            "{mode}: row {i} ({}) is not sampled: nothing of it is exported",
            case.name
        );
    }

    sent.into_iter()
        .map(|(i, case)| {
            let hops = Hops {
                server: pick(&spans, "SERVER", front.pid(), i),
                client: pick(&spans, "CLIENT", front.pid(), i),
                back: pick(&spans, "SERVER", back.pid(), i),
            };
            ((i, case), hops)
        })
        .collect()
}

/// Checks one row's spans in `mode` against the row; the back SERVER span's parent is the front
/// CLIENT span when `edits`, else the caller's span as forwarded.
fn check_row(mode: &str, (i, case): Row, h: &Hops, edits: bool) {
    let Outcome::Context { trace, parent, .. } = case.outcome else {
        unreachable!("only rows with a context are exported");
    };
    let spans = [h.server.clone(), h.client.clone(), h.back.clone()];
    let what = format!("{mode}: row {i} ({})", case.name);
    check_eq!(
        &spans,
        h.server.trace_id,
        trace,
        "{what}: front SERVER trace"
    );
    check_eq!(
        &spans,
        h.server.parent_span_id,
        parent,
        "{what}: front SERVER parent"
    );
    check_eq!(
        &spans,
        h.client.trace_id,
        trace,
        "{what}: front CLIENT trace"
    );
    check_eq!(
        &spans,
        h.client.parent_span_id,
        h.server.span_id,
        "{what}: front CLIENT under front SERVER"
    );
    check_eq!(&spans, h.back.trace_id, trace, "{what}: back SERVER trace");
    let back_parent = if edits {
        h.client.span_id.as_str()
    } else {
        parent
    };
    check_eq!(
        &spans,
        h.back.parent_span_id,
        back_parent,
        "{what}: back SERVER parent"
    );
}

#[test]
fn rewrite_and_inject_give_the_same_trees_as_read_only_for_every_valid_row() {
    let _serial = root_test();
    let rows = rows_with_context();
    assert!(
        rows.iter().filter(|(_, c)| exported(c)).count() >= 30,
        "the table has lost its rows with a context"
    );
    for (mode, edits) in [("read-only", false), ("rewrite", true), ("inject", true)] {
        let got = run(mode, &rows);
        check_eq!(
            &[],
            got.len(),
            rows.iter().filter(|(_, c)| exported(c)).count(),
            "{mode}: every sampled row exported"
        );
        for (row, hops) in &got {
            check_row(mode, *row, hops, edits);
        }
    }
}
