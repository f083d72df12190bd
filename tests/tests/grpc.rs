//! Root: gRPC spans from real gRPC services in Go (Debian's gRPC 1.33), Python (grpcio) and Node
//! (@grpc/grpc-js), each calling a downstream of its own language and forwarding the incoming
//! B3/W3C metadata unchanged, as mesh apps do. Expected per call: the front SERVER span (parent =
//! the caller's span id), the front CLIENT span (parent = that SERVER span) and the back SERVER
//! span (parent = the forwarded span id), all in the caller's trace, named
//! `demo.Greeter/METHOD` with the `rpc.*` attributes, the gRPC status, the message counts and the
//! gRPC conventions' error status. Also: a python -> go -> node chain as one trace, calls on a
//! connection opened before the agent, and the write side leaving gRPC bytes alone.

use std::time::Duration;

use tracer_tests::expect::{of_pid, only, padded};
use tracer_tests::grpc::{Call, GrpcClient, Rpc, RpcSpan, code, grpc_call};
use tracer_tests::harness::{
    Agent, Lang, Receiver, Service, Span, free_port, random_hex, root_test,
};
use tracer_tests::tree::render;
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// One call driven by the test, with the context it carries.
struct Driven {
    label: &'static str,
    rpc: Rpc<'static>,
    /// The status every hop ends with (the front passes the back's failure up).
    status: i64,
    /// Response messages of a successful call.
    messages: i64,
    /// The trace id the spans must carry (64-bit ids padded).
    trace: String,
    /// The span id the call carries.
    incoming: String,
    metadata: Vec<(&'static str, String)>,
}

/// The four calls of the per-language test, each with a context format of its own.
fn calls() -> Vec<Driven> {
    let (t1, s1) = (random_hex(16), random_hex(8));
    let (t2, s2) = (random_hex(8), random_hex(8));
    let (t3, s3) = (random_hex(16), random_hex(8));
    let (t4, s4) = (random_hex(16), random_hex(8));
    vec![
        Driven {
            label: "SayHello OK, B3 multi 128-bit",
            rpc: Rpc::SayHello("alice"),
            status: code::OK,
            messages: 1,
            trace: t1.clone(),
            incoming: s1.clone(),
            metadata: vec![
                ("x-b3-traceid", t1),
                ("x-b3-spanid", s1),
                ("x-b3-sampled", "1".into()),
            ],
        },
        Driven {
            label: "SayHello NOT_FOUND, B3 multi 64-bit",
            rpc: Rpc::SayHello("missing"),
            status: code::NOT_FOUND,
            messages: 0,
            trace: padded(&t2),
            incoming: s2.clone(),
            metadata: vec![
                ("x-b3-traceid", t2),
                ("x-b3-spanid", s2),
                ("x-b3-parentspanid", random_hex(8)),
                ("x-b3-sampled", "1".into()),
            ],
        },
        Driven {
            label: "SayHello INTERNAL, B3 single",
            rpc: Rpc::SayHello("fail"),
            status: code::INTERNAL,
            messages: 0,
            trace: t3.clone(),
            incoming: s3.clone(),
            metadata: vec![("b3", format!("{t3}-{s3}-1"))],
        },
        Driven {
            label: "Count(5) server streaming, traceparent",
            rpc: Rpc::Count(5),
            status: code::OK,
            messages: 5,
            trace: t4.clone(),
            incoming: s4.clone(),
            metadata: vec![("traceparent", format!("00-{t4}-{s4}-01"))],
        },
    ]
}

fn metadata(d: &Driven) -> Vec<(&str, &str)> {
    d.metadata.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The response the client must get for `d`.
fn expected_call(d: &Driven) -> (i64, Vec<String>) {
    let responses = match d.rpc {
        Rpc::SayHello(name) if d.status == code::OK => vec![format!("hello {name}")],
        Rpc::Count(n) => (1..=n).map(|i| i.to_string()).collect(),
        Rpc::SayHello(_) => Vec::new(),
    };
    (d.status, responses)
}

/// front (lang) -> back (lang), each call driven by the same language's client.
fn front_and_back(lang: Lang) {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = lang.start_grpc(free_port(), None, &[]);
    let front = lang.start_grpc(free_port(), Some(&back.grpc_url()), &[]);
    let _agent = Agent::start_for(&rx, "grpc", &[front.pid(), back.pid()], &[]);

    let driven = calls();
    for d in &driven {
        let call = grpc_call(lang, &front.grpc_target(), d.rpc, &metadata(d));
        assert_eq!(
            (call.status, call.responses.clone()),
            expected_call(d),
            "{lang:?} {}: {call:?}",
            d.label
        );
    }
    let spans = rx.wait_for_named(
        &format!("{lang:?} front SERVER + CLIENT and back SERVER spans of every call"),
        |s| {
            driven.iter().all(|d| {
                let n = |kind: &str, pid: u32| {
                    s.iter()
                        .filter(|x| x.trace_id == d.trace && x.kind == kind && of_pid(x, pid))
                        .count()
                };
                n("SERVER", front.pid()) >= 1
                    && n("CLIENT", front.pid()) >= 1
                    && n("SERVER", back.pid()) >= 1
            })
        },
        WAIT,
    );
    for d in &driven {
        check_hop(&spans, d, &format!("{lang:?}: {}", d.label), &front, &back);
    }
}

/// What `d` must have produced on one side.
fn expected<'a>(d: &'a Driven, kind: &'a str, parent: &'a str, pid: u32) -> RpcSpan<'a> {
    RpcSpan {
        kind,
        trace_id: &d.trace,
        parent,
        rpc: d.rpc,
        status: d.status,
        response_messages: if d.status == code::OK { d.messages } else { 0 },
        pid,
    }
}

/// The three spans of one call through front -> back.
fn check_hop(spans: &[Span], d: &Driven, label: &str, front: &Service, back: &Service) {
    let pick = |kind: &str, pid: u32, what: &str| {
        only(spans, &format!("{what} {kind} span ({label})"), |s| {
            s.trace_id == d.trace && s.kind == kind && of_pid(s, pid)
        })
    };
    let front_server = pick("SERVER", front.pid(), "front");
    expected(d, "SERVER", &d.incoming, front.pid()).check(
        spans,
        front_server,
        &format!("{label}: front SERVER"),
    );
    let client = pick("CLIENT", front.pid(), "front");
    expected(d, "CLIENT", &front_server.span_id, front.pid()).check(
        spans,
        client,
        &format!("{label}: front CLIENT"),
    );
    // Read-only: the app forwarded the incoming span id unchanged, so that is the parent.
    let back_server = pick("SERVER", back.pid(), "back");
    expected(d, "SERVER", &d.incoming, back.pid()).check(
        spans,
        back_server,
        &format!("{label}: back SERVER"),
    );
}

#[test]
fn go_grpc_unary_and_streaming_calls_give_joined_spans() {
    front_and_back(Lang::Go);
}

#[test]
fn python_grpc_unary_and_streaming_calls_give_joined_spans() {
    front_and_back(Lang::Python);
}

#[test]
fn node_grpc_unary_and_streaming_calls_give_joined_spans() {
    front_and_back(Lang::Node);
}

/// python -> go -> node, every hop gRPC: five spans in the caller's trace, each CLIENT under its
/// process's SERVER, each SERVER under the caller's span (forwarded unchanged); an INTERNAL
/// failure at the end of the chain marks every span of its trace as an error.
#[test]
fn grpc_chain_python_go_node_is_one_trace() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let node = Service::grpc_node(free_port(), None, &[]);
    let go = Service::grpc_go(free_port(), Some(&node.grpc_url()), &[]);
    let python = Service::grpc_python(free_port(), Some(&go.grpc_url()), &[]);
    let hops = [("python", &python), ("go", &go), ("node", &node)];
    let _agent = Agent::start_for(&rx, "grpc", &[python.pid(), go.pid(), node.pid()], &[]);

    for (label, rpc, status, messages) in [
        ("SayHello OK", Rpc::SayHello("chain"), code::OK, 1),
        ("Count(3)", Rpc::Count(3), code::OK, 3),
        (
            "SayHello INTERNAL at the last hop",
            Rpc::SayHello("fail"),
            code::INTERNAL,
            0,
        ),
    ] {
        let (trace, incoming) = (random_hex(16), random_hex(8));
        let d = Driven {
            label,
            rpc,
            status,
            messages,
            trace: trace.clone(),
            incoming: incoming.clone(),
            metadata: vec![
                ("x-b3-traceid", trace.clone()),
                ("x-b3-spanid", incoming.clone()),
                ("x-b3-sampled", "1".into()),
            ],
        };
        let call = grpc_call(Lang::Go, &python.grpc_target(), rpc, &metadata(&d));
        check_eq!(
            &[],
            (call.status, call.responses.clone()),
            expected_call(&d),
            "{label} through the chain: {call:?}"
        );
        let spans = rx.wait_for_named(
            &format!("3 SERVER and 2 CLIENT spans of trace {trace} ({label})"),
            |s| {
                let n = |kind: &str| {
                    s.iter()
                        .filter(|x| x.trace_id == trace && x.kind == kind)
                        .count()
                };
                n("SERVER") >= 3 && n("CLIENT") >= 2
            },
            WAIT,
        );
        let tree: Vec<Span> = spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect();
        let label = format!("{label}, trace:\n{}", render(&tree));
        check_eq!(&tree, tree.len(), 5, "{label}: span count");
        for (i, (name, svc)) in hops.iter().enumerate() {
            let server = only(&tree, &format!("{name} SERVER span"), |s| {
                s.kind == "SERVER" && of_pid(s, svc.pid())
            });
            expected(&d, "SERVER", &incoming, svc.pid()).check(
                &tree,
                server,
                &format!("{label}\n{name} SERVER"),
            );
            if i + 1 < hops.len() {
                let client = only(&tree, &format!("{name} CLIENT span"), |s| {
                    s.kind == "CLIENT" && of_pid(s, svc.pid())
                });
                expected(&d, "CLIENT", &server.span_id, svc.pid()).check(
                    &tree,
                    client,
                    &format!("{label}\n{name} CLIENT"),
                );
            }
        }
    }
}

/// A client that keeps calling on one connection opened (and its HPACK tables filled) before the
/// agent started: its later calls still get spans with the right trace and parent. Each call
/// carries its own B3 ids (`{seq}`), so every later span can be matched to its call.
#[test]
fn calls_on_a_connection_opened_before_the_agent_get_joined_spans() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Service::grpc_node(free_port(), None, &[]);
    let front = Service::grpc_python(free_port(), Some(&back.grpc_url()), &[]);
    let (trace_prefix, span_prefix) = (random_hex(12), random_hex(4));
    let mut client = GrpcClient::start(
        Lang::Go,
        &front.grpc_target(),
        Rpc::SayHello("busy"),
        &[
            ("x-b3-traceid", &format!("{trace_prefix}{{seq}}")),
            ("x-b3-spanid", &format!("{span_prefix}{{seq}}")),
            ("x-b3-sampled", "1"),
        ],
        0,
        100,
    );
    // Both connections (client -> front, front -> back) are open and have carried calls.
    let before = client.wait_call(5, Duration::from_secs(20));
    let agent = Agent::start_for(&rx, "grpc", &[front.pid(), back.pid()], &[]);
    let spans = rx.wait_for_named(
        "front SERVER + CLIENT and back SERVER spans of one call made after the agent started",
        |s| {
            s.iter().any(|server| {
                server.kind == "SERVER"
                    && of_pid(server, front.pid())
                    && server.trace_id.starts_with(&trace_prefix)
                    && s.iter()
                        .any(|c| c.kind == "CLIENT" && c.trace_id == server.trace_id)
                    && s.iter().any(|b| {
                        b.kind == "SERVER" && of_pid(b, back.pid()) && b.trace_id == server.trace_id
                    })
            })
        },
        WAIT,
    );
    drop(agent);
    let calls = client.stop();
    check!(
        &spans,
        calls
            .iter()
            .all(|c: &Call| c.status == code::OK && c.responses == ["hello busy"]),
        "every call succeeded: {calls:?}"
    );
    let mut checked = 0;
    for server in spans.iter().filter(|s| {
        s.kind == "SERVER" && of_pid(s, front.pid()) && s.trace_id.starts_with(&trace_prefix)
    }) {
        let seq = &server.trace_id[trace_prefix.len()..];
        let label = format!("call {seq} (the agent started after call {})", before.len());
        check_eq!(
            &spans,
            server.parent_span_id,
            format!("{span_prefix}{seq}"),
            "{label}: front SERVER parent"
        );
        let in_trace = |kind: &str, pid: u32| {
            spans
                .iter()
                .filter(|s| s.trace_id == server.trace_id && s.kind == kind && of_pid(s, pid))
                .collect::<Vec<_>>()
        };
        for client_span in in_trace("CLIENT", front.pid()) {
            check_eq!(
                &spans,
                client_span.parent_span_id,
                server.span_id,
                "{label}: front CLIENT parent"
            );
            checked += 1;
        }
        for back_server in in_trace("SERVER", back.pid()) {
            check_eq!(
                &spans,
                back_server.parent_span_id,
                format!("{span_prefix}{seq}"),
                "{label}: back SERVER parent"
            );
        }
    }
    check!(&spans, checked >= 1, "at least one joined call was checked");
}

/// `--write-mode rewrite` must leave HTTP/2 alone until it can edit it: through a traced client,
/// a traced front and a traced back, every call's metadata reaches the back exactly as sent (on
/// one connection, 20 calls, so HPACK's dynamic table is in play), a large request comes back
/// byte for byte, and a stream of 50 messages arrives whole.
#[test]
fn rewrite_mode_leaves_grpc_untouched() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Service::grpc_node(free_port(), None, &[]);
    let front = Service::grpc_go(free_port(), Some(&back.grpc_url()), &[]);
    let (trace_prefix, span_prefix) = (random_hex(12), random_hex(4));
    let traceid = format!("{trace_prefix}{{seq}}");
    let spanid = format!("{span_prefix}{{seq}}");
    let b3 = format!("{trace_prefix}{{seq}}-{span_prefix}{{seq}}-1-{span_prefix}ffffffff");
    let traceparent = format!("00-{trace_prefix}{{seq}}-{span_prefix}{{seq}}-01");
    let sent = [
        ("x-b3-traceid", traceid.as_str()),
        ("x-b3-spanid", spanid.as_str()),
        ("x-b3-sampled", "1"),
        ("b3", b3.as_str()),
        ("traceparent", traceparent.as_str()),
    ];
    // The agent traces the client too, so the first hop's requests are candidates for editing.
    // The client runs until stopped: its connection is open before the agent and carries 20 more
    // calls after it is ready.
    let mut client = GrpcClient::start(
        Lang::Python,
        &front.grpc_target(),
        Rpc::SayHello("metadata"),
        &sent,
        0,
        50,
    );
    client.wait_call(1, WAIT);
    let _agent = Agent::start_for(
        &rx,
        "grpc",
        &[client.pid(), front.pid(), back.pid()],
        &["--write-mode", "rewrite"],
    );
    let ready = u32::try_from(client.calls().len()).expect("call count fits u32");
    client.wait_call(ready + 20, WAIT);
    let calls = client.stop();
    for call in &calls {
        let seq = format!("{:08x}", call.call);
        let mut want: Vec<String> = sent
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace("{seq}", &seq)))
            .collect();
        want.sort();
        check_eq!(&[], call.status, code::OK, "call {}: {call:?}", call.call);
        check_eq!(
            &[],
            call.responses,
            [want.join("\n")],
            "call {}: the metadata the back service received",
            call.call
        );
    }
    let big = "x".repeat(20_000);
    let call = grpc_call(Lang::Node, &front.grpc_target(), Rpc::SayHello(&big), &sent);
    check!(
        &[],
        call.status == code::OK && call.responses == [format!("hello {big}")],
        "a 20 kB request through two traced hops comes back intact (status {}, {} bytes back)",
        call.status,
        call.responses.first().map_or(0, String::len)
    );
    let call = grpc_call(Lang::Go, &front.grpc_target(), Rpc::Count(50), &sent);
    let want: Vec<String> = (1..=50).map(|i| i.to_string()).collect();
    check_eq!(
        &[],
        (call.status, call.responses),
        (code::OK, want),
        "Count(50)"
    );
}
