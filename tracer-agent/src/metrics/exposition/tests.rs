use std::sync::atomic::Ordering::Relaxed;

use tracer_common::counter;

use super::{
    ATTACH_INFO, Exposition, Format, KERNEL_COUNTERS, gauges, other_counters, user_counters,
};
use crate::metrics::Metrics;

fn metrics() -> &'static Metrics {
    Box::leak(Box::default())
}

/// Every counter of the three tables with its current value.
fn all_counters(m: &Metrics) -> Vec<(&'static str, &'static str, u64)> {
    KERNEL_COUNTERS
        .iter()
        .map(|(idx, name, help)| (*name, *help, m.kernel[*idx as usize].load(Relaxed)))
        .chain(user_counters(m))
        .chain(other_counters(m))
        .collect()
}

#[test]
fn text_format_keeps_every_name_help_and_type() {
    let m = metrics();
    m.kernel[counter::RINGBUF_FULL as usize].store(3, Relaxed);
    m.spans_queue_full.store(2, Relaxed);
    m.endpoint_rejected.store(7, Relaxed);
    m.connections.store(5, Relaxed);
    m.set_attach_plan("capture=socket (fentry tcp_sendmsg)".to_owned());
    let text = Exposition::new(m).render(Format::Text);

    // Spelled out, not taken from the tables: what the scrapers in tests/ and xtask read.
    for sample in [
        "\ntracer_kernel_dropped_ringbuf_full_total 3\n",
        "\ntracer_dropped_spans_queue_full_total 2\n",
        "\ntracer_metrics_connections_rejected_total 7\n",
        "\ntracer_connections 5\n",
        "\ntracer_attach_info{plan=\"capture=socket (fentry tcp_sendmsg)\"} 1\n",
    ] {
        assert!(text.contains(sample), "{sample:?} missing from:\n{text}");
    }
    assert_eq!(m.kernel_drops(), 3);
    assert_eq!(m.user_drops(), 2);

    // The layout the hand-written renderer had: HELP, TYPE, sample, under the scraped name.
    let counters = all_counters(m);
    for (name, help, value) in &counters {
        let block = format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
        assert!(text.contains(&block), "{block:?} missing from:\n{text}");
    }
    for (name, help, value) in gauges(m) {
        let block = format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        assert!(text.contains(&block), "{block:?} missing from:\n{text}");
    }
    let (family, help) = ATTACH_INFO;
    let block = format!("# HELP {family}_info {help}\n# TYPE {family}_info gauge\n");
    assert!(text.contains(&block), "{block:?} missing from:\n{text}");

    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    assert_eq!(
        types.len(),
        counters.len() + gauges(m).len() + 1,
        "one family per metric:\n{text}"
    );
    for line in &types {
        let name = line.split(' ').nth(2).unwrap();
        assert_eq!(
            text.matches(&format!("# TYPE {name} ")).count(),
            1,
            "{name} twice"
        );
    }
    assert!(!text.contains("# EOF"), "no OpenMetrics marker in 0.0.4");
}

#[test]
fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
    let m = metrics();
    m.export_errors.store(4, Relaxed);
    m.set_attach_plan("capture=syscall \"tracepoints\"".to_owned());
    let text = Exposition::new(m).render(Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains(
            "# HELP tracer_export_errors Failed OTLP export attempts.\n\
             # TYPE tracer_export_errors counter\n\
             tracer_export_errors_total 4\n"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE tracer_k8s_pods gauge\ntracer_k8s_pods 0\n"));
    // A quote in a label value is escaped, not cut.
    assert!(
        text.contains(
            "# TYPE tracer_attach info\ntracer_attach_info{plan=\"capture=syscall \\\"tracepoints\\\"\"} 1\n"
        ),
        "{text}"
    );
}

#[test]
fn every_counter_is_named_with_total() {
    for (name, ..) in all_counters(metrics()) {
        assert!(name.ends_with("_total"), "{name}");
    }
}

#[test]
fn accept_header_picks_the_format() {
    // What Prometheus 3 sends.
    let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
        application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
        escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    assert_eq!(
        Format::from_accept(Some("Application/OpenMetrics-Text")),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_accept(None), Format::Text);
    assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
    assert_eq!(
        Format::from_accept(Some("text/plain;version=0.0.4")),
        Format::Text
    );
    assert_eq!(
        Format::from_accept(Some("application/openmetrics-text;q=0, text/plain")),
        Format::Text
    );
    assert_eq!(
        Format::OpenMetrics.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        Format::Text.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
}
