//! The demo services and the raw client, without the agent (no root needed): if these fail, the
//! root tests' span assertions would fail for reasons that have nothing to do with the tracer.

use tracer_tests::harness::{HttpConn, Lang, free_port, get};

fn endpoints(lang: Lang) {
    let back = Lang::Python.start(free_port(), None, &[]);
    let svc = lang.start(free_port(), Some(&back.url()), &[]);
    let port = svc.port();
    let ctx = lang_label(lang);

    let r = get(port, "/hello", &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello\n"),
        "{ctx} /hello"
    );
    assert_eq!(get(port, "/hello?x=1", &[]).status, 200, "{ctx} /hello?x=1");
    assert_eq!(
        get(port, "/status/500", &[]).status,
        500,
        "{ctx} /status/500"
    );
    assert_eq!(
        get(port, "/status/404", &[]).status,
        404,
        "{ctx} /status/404"
    );
    assert_eq!(
        get(port, "/status/204", &[]).body.len(),
        0,
        "{ctx} /status/204 has no body"
    );
    assert_eq!(get(port, "/nope", &[]).status, 404, "{ctx} unknown path");

    let mut conn = HttpConn::connect(port);
    let r = conn.request("POST", "/echo", &[], Some(b"with-length"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "with-length"),
        "{ctx} POST /echo"
    );
    let r = conn.request_chunked("POST", "/echo", &[], &[b"chunk-a/", b"chunk-b"]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "chunk-a/chunk-b"),
        "{ctx} chunked POST /echo"
    );
    let r = conn.request("GET", "/chunked", &[], None);
    assert!(
        r.chunked && r.chunks > 1,
        "{ctx} /chunked must be chunked in several chunks: {r:?}"
    );
    assert_eq!(
        r.text(),
        "chunk 0\nchunk 1\nchunk 2\nchunk 3\n",
        "{ctx} /chunked body"
    );
    let r = conn.request("GET", "/setcookie", &[], None);
    assert_eq!(
        r.header("set-cookie"),
        Some("id=s3cr3t-set-cookie"),
        "{ctx} /setcookie"
    );

    // Downstream call: status and body come back.
    let r = conn.request(
        "GET",
        "/call/hello",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ],
        None,
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello\n"),
        "{ctx} /call/hello via {}",
        back.url()
    );
    assert_eq!(
        conn.request("GET", "/call/status/503", &[], None).status,
        503,
        "{ctx} /call/status/503"
    );

    // 100 requests on one connection, then 10 pipelined in a single write.
    for i in 0..100 {
        let r = conn.request("POST", "/echo", &[], Some(format!("req-{i}").as_bytes()));
        assert_eq!(r.text(), format!("req-{i}"), "{ctx} keep-alive request {i}");
    }
    let codes = [200, 201, 202, 203, 206, 404, 409, 410, 500, 503];
    let mut bytes = Vec::new();
    for c in codes {
        bytes.extend(conn.format_request("GET", &format!("/status/{c}"), &[], None));
    }
    conn.send_raw(&["GET"; 10], &bytes);
    for c in codes {
        assert_eq!(
            conn.read_response().status,
            c,
            "{ctx} pipelined /status/{c}"
        );
    }
    assert!(
        svc.output().contains(&format!("listening on {port}")),
        "{ctx} output: {}",
        svc.output()
    );
}

fn lang_label(lang: Lang) -> String {
    format!("{lang:?} service")
}

#[test]
fn go_service_endpoints() {
    endpoints(Lang::Go);
}

#[test]
fn python_service_endpoints() {
    endpoints(Lang::Python);
}

#[test]
fn node_service_endpoints() {
    endpoints(Lang::Node);
}

#[test]
fn downstream_receives_exactly_the_propagation_headers() {
    // A Python service whose /call goes to a Go service whose /call goes to the Python /echo is
    // not possible with GET; instead check the forwarded headers reach the last hop by asking the
    // middle service to call a raw listener.
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    for lang in Lang::ALL {
        let svc = lang.start(free_port(), Some(&url), &[]);
        let port = svc.port();
        let client = std::thread::spawn(move || {
            get(
                port,
                "/call/x",
                &[
                    ("x-b3-traceid", "463ac35c9f6413ad"),
                    ("x-b3-spanid", "a2fb4a1d1a96d312"),
                    ("x-b3-parentspanid", "0020000000000001"),
                    ("x-b3-sampled", "1"),
                    ("x-b3-flags", "1"),
                    ("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1"),
                    (
                        "traceparent",
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    ),
                    ("tracestate", "a=b"),
                    ("authorization", "Bearer not-forwarded"),
                ],
            )
        });
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(
                reader.read_line(&mut head).unwrap() > 0,
                "{lang:?}: downstream request cut short: {head}"
            );
        }
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        drop(reader);
        assert_eq!(
            client.join().unwrap().text(),
            "ok",
            "{lang:?}: /call answers the downstream body"
        );
        let lower = head.to_ascii_lowercase();
        for h in [
            "x-b3-traceid: 463ac35c9f6413ad",
            "x-b3-spanid: a2fb4a1d1a96d312",
            "x-b3-parentspanid: 0020000000000001",
            "x-b3-sampled: 1",
            "x-b3-flags: 1",
            "b3: 463ac35c9f6413ad-a2fb4a1d1a96d312-1",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate: a=b",
        ] {
            assert!(
                lower.contains(h),
                "{lang:?} must forward {h:?}; downstream got:\n{head}"
            );
        }
        assert!(
            !lower.contains("authorization"),
            "{lang:?} must forward only propagation headers:\n{head}"
        );
        assert!(
            lower.starts_with("get /x http/1.1"),
            "{lang:?} downstream request line:\n{head}"
        );
    }
}
