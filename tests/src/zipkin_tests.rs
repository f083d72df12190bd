//! Zipkin conversion tests (no root), on bodies exactly as Envoy 1.40's Zipkin tracer posted them
//! (captured from sidecars: an inbound SERVER span that started a 64-bit trace, an outbound CLIENT
//! span whose upstream answered 503, and an inbound SERVER span in a 128-bit trace under a caller's
//! span), plus hand-made edge cases.

use super::{SOURCE, parse_spans};
use crate::http::HttpConn;
use crate::otlp::Receiver;

/// A trace root: no parentId, and Envoy reuses the 64-bit trace id as the span id.
const ROOT_SERVER: &str = r#"[{"localEndpoint":{"ipv4":"192.0.2.2","port":0,"serviceName":"service-a-sidecar"},"duration":5404,"id":"bdcf24c2c254f2e9","timestamp":1795723021296334,"name":"localhost:21001","traceId":"bdcf24c2c254f2e9","annotations":[{"value":"ss","timestamp":1795723021301820}],"kind":"SERVER","tags":{"response_flags":"-","http.protocol":"HTTP/1.1","response_size":"293","user_agent":"curl/7.88.1","http.url":"http://localhost:21001/x?y=1","upstream_cluster.name":"app","peer.address":"127.0.0.1","upstream_cluster":"app","http.method":"GET","component":"proxy","http.status_code":"200","request_size":"0","node_id":"service-a-sidecar","downstream_cluster":"-","guid:x-request-id":"d16eebb3-48cf-9292-a458-1957ac2c2b2c"}}]"#;

const CLIENT_503: &str = r#"[{"name":"localhost:21002","traceId":"50b1b4be827f5f92","duration":1287,"timestamp":1795723026046249,"kind":"CLIENT","annotations":[{"timestamp":1795723026047645,"value":"cr"}],"id":"50b1b4be827f5f92","localEndpoint":{"port":0,"serviceName":"service-a-sidecar","ipv4":"192.0.2.2"},"tags":{"error":"true","downstream_cluster":"-","guid:x-request-id":"c352a15c-5bb5-9163-888d-0556ad17fede","upstream_cluster.name":"app","request_size":"0","http.protocol":"HTTP/1.1","http.method":"GET","component":"proxy","user_agent":"curl/7.88.1","http.url":"http://localhost:21002/status/503","response_size":"11","upstream_cluster":"app","node_id":"service-a-sidecar","peer.address":"127.0.0.1","http.status_code":"503","response_flags":"-"}}]"#;

const SERVER_128: &str = r#"[{"localEndpoint":{"serviceName":"service-a-sidecar","ipv4":"192.0.2.2","port":0},"timestamp":1795723694884381,"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","name":"localhost:22001","parentId":"00f067aa0ba902b7","annotations":[{"value":"ss","timestamp":1795723694899387}],"kind":"SERVER","tags":{"http.url":"http://localhost:22001/status/503","error":"true","http.method":"GET","http.status_code":"503","node_id":"service-a-sidecar","http.protocol":"HTTP/1.1","response_flags":"-","guid:x-request-id":"bb65a202-89dc-9e47-a7de-858636ed11d0","upstream_cluster.name":"app","user_agent":"curl/7.88.1","upstream_cluster":"app","downstream_cluster":"-","request_size":"0","component":"proxy","peer.address":"127.0.0.1","response_size":"11"},"duration":14821,"id":"40f6e6d4bceb9b07"}]"#;

/// Hand-made: uppercase ids, `shared`, a 5xx without an error tag.
const SHARED_UPPER: &str = r#"[{"traceId":"4BF92F3577B34DA6A3CE929D0E0E4736","id":"00F067AA0BA902B7","parentId":"1","name":"in","kind":"SERVER","timestamp":10,"duration":5,"shared":true,"localEndpoint":{"serviceName":"x"},"tags":{"http.status_code":"503"}}]"#;

#[test]
fn converts_a_root_server_span_and_pads_the_64_bit_trace_id() {
    let spans = parse_spans(ROOT_SERVER.as_bytes()).unwrap();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    // As the collector's zipkin receiver stores it: the high 64 bits are zero.
    assert_eq!(s.trace_id, "0000000000000000bdcf24c2c254f2e9");
    assert_eq!(s.span_id, "bdcf24c2c254f2e9");
    assert_eq!(s.parent_span_id, "");
    assert_eq!(s.kind, "SERVER");
    assert_eq!(s.name, "localhost:21001");
    assert_eq!(s.service_name(), "service-a-sidecar");
    assert_eq!(s.start_unix_nanos, 1_795_723_021_296_334_000);
    assert_eq!(s.end_unix_nanos, 1_795_723_021_301_738_000);
    assert_eq!(s.attr_str("http.status_code"), Some("200"));
    assert_eq!(s.attr_str("http.url"), Some("http://localhost:21001/x?y=1"));
    assert_eq!(s.status_code, "UNSET");
    assert_eq!((s.source, s.shared), (SOURCE, false));
}

#[test]
fn error_tag_and_5xx_give_error_status() {
    let s = &parse_spans(CLIENT_503.as_bytes()).unwrap()[0];
    assert_eq!(s.kind, "CLIENT");
    assert_eq!(s.trace_id, "000000000000000050b1b4be827f5f92");
    assert_eq!(s.parent_span_id, "");
    assert_eq!(s.status_code, "ERROR");
    assert_eq!(s.status_message, "", "error=true carries no message");
    assert_eq!(s.attr_str("error"), Some("true"), "the tag is kept");
    assert_eq!(s.attr_str("http.status_code"), Some("503"));

    let s = &parse_spans(SERVER_128.as_bytes()).unwrap()[0];
    assert_eq!(
        s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
        "128-bit ids stay as they are"
    );
    assert_eq!(s.span_id, "40f6e6d4bceb9b07");
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(
        (s.kind.as_str(), s.status_code.as_str()),
        ("SERVER", "ERROR")
    );
    assert_eq!(s.end_unix_nanos - s.start_unix_nanos, 14_821_000);

    let s = &parse_spans(SHARED_UPPER.as_bytes()).unwrap()[0];
    assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "lowercased");
    assert_eq!(s.span_id, "00f067aa0ba902b7", "lowercased");
    assert_eq!(s.parent_span_id, "0000000000000001", "padded");
    assert_eq!(
        s.status_code, "ERROR",
        "http.status_code 503 without an error tag"
    );
    assert!(s.shared);
    assert_eq!((s.start_unix_nanos, s.end_unix_nanos), (10_000, 15_000));
}

#[test]
fn short_ids_are_padded_and_bad_ones_reject_the_batch() {
    let short = r#"[{"traceId":"abc","id":"1f","name":"n"}]"#;
    let s = &parse_spans(short.as_bytes()).unwrap()[0];
    assert_eq!(s.trace_id, format!("{:0>32}", "abc"));
    assert_eq!(s.span_id, "000000000000001f");
    assert_eq!(s.kind, "UNSPECIFIED");
    for bad in [
        "{}",
        "not json",
        r#"[{"id":"1"}]"#,
        r#"[{"traceId":"1","id":"xyz"}]"#,
        r#"[{"traceId":"00000000","id":"1"}]"#,
        r#"[{"traceId":"1","id":"11112222333344445"}]"#,
        r#"[{"traceId":"1","id":"1"},{"traceId":"1"}]"#,
    ] {
        assert!(
            parse_spans(bad.as_bytes()).is_err(),
            "{bad} must be rejected"
        );
    }
}

#[test]
fn the_store_takes_chunked_zipkin_and_answers_trace_queries() {
    let rx = Receiver::start_blocking();
    let mut conn = HttpConn::connect(rx.http_port());
    let headers = [("Content-Type", "application/json")];
    let (a, b) = CLIENT_503.as_bytes().split_at(100);
    let resp = conn.request_chunked("POST", "/api/v2/spans", &headers, &[a, b]);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let resp = conn.request(
        "POST",
        "/api/v2/spans",
        &headers,
        Some(ROOT_SERVER.as_bytes()),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let resp = conn.request("POST", "/api/v2/spans", &headers, Some(b"[{}]"));
    assert_eq!(resp.status, 400, "{}", resp.text());

    let trace = "000000000000000050b1b4be827f5f92";
    let spans = rx.spans_of_trace(trace);
    assert_eq!(spans.len(), 1, "{}", crate::otlp::dump(&rx.spans()));
    assert_eq!(spans[0].span_id, "50b1b4be827f5f92");

    let resp = conn.request("GET", &format!("/api/traces/{trace}"), &[], None);
    assert_eq!(resp.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(json["trace_id"], trace);
    let spans = json["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1, "{json}");
    assert_eq!(spans[0]["span_id"], "50b1b4be827f5f92");
    assert_eq!(spans[0]["source"], "zipkin");
    assert_eq!(spans[0]["status_code"], "ERROR");
    assert_eq!(spans[0]["resource"]["service.name"], "service-a-sidecar");
    assert_eq!(spans[0]["attributes"]["http.status_code"], "503");

    let resp = conn.request(
        "GET",
        "/api/traces/00000000000000000000000000000001",
        &[],
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(json["spans"], serde_json::json!([]));
}
