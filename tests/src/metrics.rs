//! Reading the agent's own metrics: one scrape of `/metrics`, and counters out of it.

use crate::harness::get;

/// The agent's Prometheus text, scraped from 127.0.0.1:`port`.
#[must_use]
pub fn scrape(port: u16) -> String {
    let r = get(port, "/metrics", &[]);
    assert_eq!(r.status, 200, "GET /metrics on 127.0.0.1:{port}");
    r.text()
}

/// The value of the unlabelled sample `name` in Prometheus text, if present.
#[must_use]
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The value of `name` as the agent on 127.0.0.1:`port` reports it now.
#[must_use]
pub fn counter(port: u16, name: &str) -> Option<u64> {
    sample(&scrape(port), name)
}
