//! The h2c part of the harness: the Node h2c service (Node's built-in http2 module, prior
//! knowledge; `tests/services/node/h2c_demo.js`), its client and `h2load` (Debian's
//! nghttp2-client, installed by `cargo xtask setup`).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Service, services_dir};
use crate::process::Proc;

impl Service {
    /// The Node h2c service (built-in http2 module, prior knowledge). `downstream`: the h2c base
    /// URL `/call/<path>` forwards to ([`Service::url`] of another h2c service).
    #[must_use]
    pub fn h2c_node(port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("node");
        cmd.arg(services_dir().join("node/h2c_demo.js"))
            .arg("server");
        Self::start("node h2c", cmd, port, downstream, env)
    }
}

/// One h2c response, as the Node client printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Response {
    pub request: u32,
    pub status: u16,
    pub body: String,
}

/// `repeat` GETs of `url` on one h2c connection (Node's http2 client), each with `headers`
/// (`{seq}` in a value: the request number as 8 hex digits); returns the responses.
///
/// # Panics
/// If the client does not finish within 30 s.
#[must_use]
pub fn h2c_get(url: &str, headers: &[(&str, &str)], repeat: u32) -> Vec<H2Response> {
    let mut cmd = Command::new("node");
    cmd.arg(services_dir().join("node/h2c_demo.js")).args([
        "client",
        "--url",
        url,
        "--repeat",
        &repeat.to_string(),
    ]);
    for (k, v) in headers {
        cmd.arg("--header").arg(format!("{k}={v}"));
    }
    let mut proc = Proc::spawn(cmd, format!("h2c client of {url}"));
    proc.wait_line("client done:", Duration::from_secs(30));
    proc.output()
        .lines()
        .filter_map(|l| l.strip_prefix("[out] "))
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some(H2Response {
                request: u32::try_from(v["request"].as_u64()?).ok()?,
                status: u16::try_from(v["status"].as_u64()?).ok()?,
                body: v["body"].as_str()?.to_owned(),
            })
        })
        .collect()
}

/// What `h2load` reported.
#[derive(Clone, Debug)]
pub struct H2load {
    /// Responses below 400 (h2load's own count).
    pub succeeded: u64,
    /// Responses of 400 and above.
    pub failed: u64,
    /// Requests with no response at all (connection errors, timeouts).
    pub errored: u64,
    pub status_2xx: u64,
    pub status_4xx: u64,
    /// Its whole output, for messages.
    pub output: String,
}

/// `h2load -n REQUESTS -c 1 -m STREAMS -H ... URL..`: `requests` requests over one h2c
/// connection, up to `streams` at once, taking the `urls` (one authority) in turn.
///
/// # Panics
/// If h2load cannot run (`cargo xtask setup` installs it) or its summary cannot be read.
#[must_use]
pub fn h2load(urls: &[&str], requests: u32, streams: u32, headers: &[(&str, &str)]) -> H2load {
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-n",
        &requests.to_string(),
        "-c",
        "1",
        "-m",
        &streams.to_string(),
    ]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = cmd.args(urls).output().unwrap_or_else(|e| {
        panic!("cannot run h2load ({e}): `cargo xtask setup` installs it (nghttp2-client)")
    });
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // requests: 1000 total, 1000 started, 1000 done, 500 succeeded, 500 failed, 0 errored, 0 timeout
    // status codes: 500 2xx, 0 3xx, 500 4xx, 0 5xx
    let figure = |line: &str, what: &str| -> u64 {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(line))
            .and_then(|rest| {
                rest.split(',').find_map(|part| {
                    let mut w = part.split_whitespace();
                    let n = w.next()?.parse().ok()?;
                    (w.next()? == what).then_some(n)
                })
            })
            .unwrap_or_else(|| panic!("no `{line} .. N {what}` in h2load's output:\n{output}"))
    };
    H2load {
        succeeded: figure("requests:", "succeeded"),
        failed: figure("requests:", "failed"),
        errored: figure("requests:", "errored"),
        status_2xx: figure("status codes:", "2xx"),
        status_4xx: figure("status codes:", "4xx"),
        output,
    }
}
