//! target/bench/latency.svg, drawn by hand: one panel per fixed-rate scenario with the latency
//! at each percentile, without (blue) and with (red) the agent, all rounds pooled. The percentile
//! axis is logarithmic in the tail (50, 90, 99, 99.9, 99.99 %), where an agent's cost shows
//! first; the latency axis is logarithmic too, so a fast median and a slow tail both stay visible.

use std::fmt::Write as _;

use super::load::percentile;

pub struct Panel {
    pub title: String,
    /// Sorted latencies in nanoseconds.
    pub without: Vec<u64>,
    pub with: Vec<u64>,
}

const W: f64 = 470.0;
const H: f64 = 290.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 42.0;
const COLUMNS: usize = 2;
/// 10^-TAIL is the last percentile shown: 99.99 %.
const TAIL: f64 = 4.0;
const STEPS: u32 = 400;

pub fn svg(panels: &[Panel]) -> String {
    let rows = panels.len().div_ceil(COLUMNS);
    let (width, height) = (W * 2.0, H * f(rows) + 30.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"18\" font-size=\"13\">Latency by percentile, \
         <tspan fill=\"#1f77b4\">without the agent</tspan> and \
         <tspan fill=\"#d62728\">with the agent</tspan> (cargo xtask bench)</text>\n"
    );
    for (i, p) in panels.iter().enumerate() {
        let (x0, y0) = (f(i % COLUMNS) * W, 30.0 + f(i / COLUMNS) * H);
        panel(&mut s, p, x0, y0);
    }
    s.push_str("</svg>\n");
    s
}

fn f(n: usize) -> f64 {
    u32::try_from(n).map_or(f64::MAX, f64::from)
}

/// The latency (us) at tail position `t`: percentile 1 - 10^-t.
fn at(sorted: &[u64], t: f64) -> f64 {
    super::agent::f64_of(percentile(sorted, 1.0 - 10f64.powf(-t))) / 1000.0
}

fn panel(out: &mut String, panel: &Panel, x0: f64, y0: f64) {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
        x0 + LEFT,
        y0 + TOP - 8.0,
        panel.title
    );
    let series = [(&panel.without, "#1f77b4"), (&panel.with, "#d62728")];
    let values = series
        .iter()
        .filter(|(v, _)| !v.is_empty())
        .flat_map(|(v, _)| [at(v, 0.0), at(v, TAIL)]);
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return;
    }
    // Decades around the data, at least one.
    let (dlo, dhi) = (
        lo.max(1.0).log10().floor(),
        hi.max(1.0)
            .log10()
            .ceil()
            .max(lo.max(1.0).log10().floor() + 1.0),
    );
    let px = |tail: f64| x0 + LEFT + pw * tail / TAIL;
    let py = |us: f64| y0 + TOP + ph * (1.0 - (us.max(1.0).log10() - dlo) / (dhi - dlo));
    let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>",
        x0 + LEFT,
        y0 + TOP
    );
    for (tail, label) in [
        (0.0, "0"),
        (std::f64::consts::LOG10_2, "50"),
        (1.0, "90"),
        (2.0, "99"),
        (3.0, "99.9"),
        (4.0, "99.99"),
    ] {
        let _ = writeln!(
            out,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#eee\"/>\
             <text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{label}</text>",
            px(tail),
            y0 + TOP,
            y0 + TOP + ph,
            y0 + TOP + ph + 14.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile (%)</text>",
        x0 + LEFT + pw / 2.0,
        y0 + TOP + ph + 30.0
    );
    let mut decade = dlo;
    while decade < dhi + 0.5 {
        for mantissa in [1.0, 2.0, 5.0] {
            let us = mantissa * 10f64.powf(decade);
            if us.log10() > dhi + 1e-9 {
                break;
            }
            let _ = writeln!(
                out,
                "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"#eee\"/>\
                 <text x=\"{3}\" y=\"{4}\" text-anchor=\"end\">{5}</text>",
                x0 + LEFT,
                x0 + LEFT + pw,
                py(us),
                x0 + LEFT - 4.0,
                py(us) + 4.0,
                label(us)
            );
        }
        decade += 1.0;
    }
    for (values, color) in series {
        if values.is_empty() {
            continue;
        }
        let mut points = String::new();
        for i in 0..=STEPS {
            let tail = TAIL * f64::from(i) / f64::from(STEPS);
            let _ = write!(points, "{:.1},{:.1} ", px(tail), py(at(values, tail)));
        }
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.trim_end()
        );
    }
}

/// An axis label: 200 us, 5 ms, 1 s.
fn label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_curves_with_readable_labels() {
        let without: Vec<u64> = (1..=10_000).map(|i| 100_000 + i * 10).collect();
        let with: Vec<u64> = (1..=10_000).map(|i| 150_000 + i * 300).collect();
        let svg = svg(&[Panel {
            title: "t".into(),
            without,
            with,
        }]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">1 ms</text>") && svg.contains(">200 us</text>"));
        assert_eq!(label(2e6), "2 s");
    }
}
