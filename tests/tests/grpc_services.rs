//! The gRPC and h2c demo services, their clients and h2load, without the agent (no root needed):
//! if these fail, the HTTP/2 and gRPC root tests would fail for reasons that have nothing to do
//! with the tracer.

use std::time::Duration;

use tracer_tests::grpc::{Call, GrpcClient, Rpc, code, grpc_call};
use tracer_tests::h2c::{h2c_get, h2load};
use tracer_tests::harness::{Lang, Service, free_port};

fn ok(call: u32, responses: &[&str]) -> Call {
    Call {
        call,
        status: code::OK,
        message: String::new(),
        responses: responses.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Every client against the `server` language's service: the answers, the error statuses, the
/// streamed messages and the metadata as the server received it; then the same language in front
/// of it passing its answers and failures up (the root tests' front -> back pair).
fn answers(server: Lang) {
    let svc = server.start_grpc(free_port(), None, &[]);
    let target = svc.grpc_target();
    let front = server.start_grpc(free_port(), Some(&svc.grpc_url()), &[]);
    for (rpc, status, responses) in [
        (Rpc::SayHello("alice"), code::OK, vec!["hello alice"]),
        (Rpc::SayHello("missing"), code::NOT_FOUND, vec![]),
        (Rpc::SayHello("fail"), code::INTERNAL, vec![]),
        (Rpc::Count(5), code::OK, vec!["1", "2", "3", "4", "5"]),
    ] {
        let call = grpc_call(server, &front.grpc_target(), rpc, &[]);
        assert_eq!(
            (call.status, call.responses.clone()),
            (status, responses.iter().map(|s| (*s).to_owned()).collect()),
            "{server:?} front -> back, {rpc:?}: {call:?}"
        );
    }
    for client in Lang::ALL {
        let ctx = format!("{client:?} client -> {server:?} server");
        assert_eq!(
            grpc_call(client, &target, Rpc::SayHello("alice"), &[]),
            ok(1, &["hello alice"]),
            "{ctx}: SayHello"
        );
        let missing = grpc_call(client, &target, Rpc::SayHello("missing"), &[]);
        assert_eq!(
            (missing.status, missing.responses.len()),
            (code::NOT_FOUND, 0),
            "{ctx}: SayHello(missing) {missing:?}"
        );
        let fail = grpc_call(client, &target, Rpc::SayHello("fail"), &[]);
        assert_eq!(
            fail.status,
            code::INTERNAL,
            "{ctx}: SayHello(fail) {fail:?}"
        );
        assert_eq!(
            grpc_call(client, &target, Rpc::Count(4), &[]),
            ok(1, &["1", "2", "3", "4"]),
            "{ctx}: Count(4)"
        );
        let sent = [
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
            ("custom-key", "custom value"),
        ];
        assert_eq!(
            grpc_call(client, &target, Rpc::SayHello("metadata"), &sent),
            ok(
                1,
                &[
                    "custom-key=custom value\nx-b3-sampled=1\nx-b3-spanid=a2fb4a1d1a96d312\n\
                   x-b3-traceid=463ac35c9f6413ad48485a3953bb6124"
                ]
            ),
            "{ctx}: the metadata the server received"
        );
    }
}

#[test]
fn go_grpc_service_answers_every_client() {
    answers(Lang::Go);
}

#[test]
fn python_grpc_service_answers_every_client() {
    answers(Lang::Python);
}

#[test]
fn node_grpc_service_answers_every_client() {
    answers(Lang::Node);
}

/// python -> go -> node: each hop forwards exactly the trace-context metadata, statuses come
/// back up the chain, and a client's repeated calls share one connection.
#[test]
fn grpc_chain_forwards_context_and_statuses() {
    let node = Service::grpc_node(free_port(), None, &[]);
    let go = Service::grpc_go(free_port(), Some(&node.grpc_url()), &[]);
    let python = Service::grpc_python(free_port(), Some(&go.grpc_url()), &[]);
    let target = python.grpc_target();
    let sent = [
        ("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1"),
        (
            "traceparent",
            "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01",
        ),
        ("not-forwarded", "x"),
    ];
    let call = grpc_call(Lang::Go, &target, Rpc::SayHello("metadata"), &sent);
    assert_eq!(
        call,
        ok(
            1,
            &["b3=463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1\n\
               traceparent=00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01"]
        ),
        "what reached node, the last hop"
    );
    let fail = grpc_call(Lang::Node, &target, Rpc::SayHello("fail"), &[]);
    assert_eq!(fail.status, code::INTERNAL, "INTERNAL from node: {fail:?}");
    assert_eq!(
        grpc_call(Lang::Python, &target, Rpc::Count(3), &[]),
        ok(1, &["1", "2", "3"]),
        "Count through the chain"
    );

    // Five calls on one connection, each with its own {seq}.
    for lang in Lang::ALL {
        let calls = GrpcClient::start(
            lang,
            &target,
            Rpc::SayHello("metadata"),
            &[("x-b3-traceid", "{seq}{seq}")],
            5,
            10,
        )
        .finish(Duration::from_secs(30));
        let want: Vec<Call> = (1..=5)
            .map(|i| ok(i, &[&format!("x-b3-traceid={i:08x}{i:08x}")]))
            .collect();
        assert_eq!(calls, want, "{lang:?} client, five calls");
    }
}

/// A gRPC service whose downstream is an HTTP/1 service GETs it with the context headers, and
/// answers INTERNAL when it answers an error.
#[test]
fn grpc_service_calls_an_http_downstream() {
    let back = Lang::Python.start(free_port(), None, &[]);
    for lang in Lang::ALL {
        let ok_url = format!("{}/hello", back.url());
        let svc = lang.start_grpc(free_port(), Some(&ok_url), &[]);
        let call = grpc_call(lang, &svc.grpc_target(), Rpc::SayHello("bob"), &[]);
        assert_eq!(
            call,
            ok(1, &["hello bob"]),
            "{lang:?} with an HTTP downstream"
        );
        let bad_url = format!("{}/status/503", back.url());
        let svc = lang.start_grpc(free_port(), Some(&bad_url), &[]);
        let call = grpc_call(lang, &svc.grpc_target(), Rpc::SayHello("bob"), &[]);
        assert_eq!(
            (call.status, call.message.as_str()),
            (code::INTERNAL, "downstream answered HTTP 503"),
            "{lang:?} with a failing HTTP downstream"
        );
        let call = grpc_call(lang, &svc.grpc_target(), Rpc::Count(2), &[]);
        assert_eq!(
            (call.status, call.message.as_str(), call.responses.len()),
            (code::INTERNAL, "downstream answered HTTP 503", 0),
            "{lang:?} streaming with a failing HTTP downstream"
        );
    }
}

/// A long-running client stops on SIGTERM after the calls it made.
#[test]
fn grpc_client_runs_until_stopped() {
    let svc = Service::grpc_python(free_port(), None, &[]);
    for lang in Lang::ALL {
        let mut client = GrpcClient::start(lang, &svc.grpc_target(), Rpc::Count(2), &[], 0, 20);
        client.wait_call(3, Duration::from_secs(20));
        let calls = client.stop();
        assert!(calls.len() >= 3, "{lang:?}: {calls:?}");
        assert!(
            calls
                .iter()
                .enumerate()
                .all(|(i, c)| *c == ok(u32::try_from(i).unwrap() + 1, &["1", "2"])),
            "{lang:?}: {calls:?}"
        );
    }
}

/// The h2c service's paths, forwarding of the context headers to an h2c downstream, and h2load's
/// 1000 requests on one connection.
#[test]
fn h2c_service_client_and_h2load() {
    let back = Service::h2c_node(free_port(), None, &[]);
    let front = Service::h2c_node(free_port(), Some(&back.url()), &[]);
    let r = h2c_get(&format!("{}/hello", front.url()), &[], 3);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(
        r.iter().all(|x| x.status == 200 && x.body == "hello\n"),
        "{r:?}"
    );
    let r = h2c_get(&format!("{}/status/503", front.url()), &[], 1);
    assert_eq!(r[0].status, 503, "{r:?}");
    let r = h2c_get(
        &format!("{}/call/headers", front.url()),
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("other", "no"),
        ],
        1,
    );
    let seen: serde_json::Value = serde_json::from_str(&r[0].body).expect("JSON headers");
    assert_eq!(
        seen,
        serde_json::json!({"x-b3-traceid": "463ac35c9f6413ad", "x-b3-spanid": "a2fb4a1d1a96d312"}),
        "what the downstream received"
    );
    let r = h2c_get(&format!("{}/call/status/404", front.url()), &[], 1);
    assert_eq!(r[0].status, 404, "{r:?}");

    let load = h2load(
        &[
            &format!("{}/hello", back.url()),
            &format!("{}/status/404", back.url()),
        ],
        1000,
        50,
        &[("x-b3-sampled", "1")],
    );
    assert_eq!(
        (
            load.succeeded,
            load.failed,
            load.errored,
            load.status_2xx,
            load.status_4xx
        ),
        (500, 500, 0, 500, 500),
        "{}",
        load.output
    );
}
