//! A two-panel SVG of a benchmark report: readings/s against workers (with the plain
//! loop as a line), and window-close-to-durable latency per worker count.

use std::fmt::Write;

use super::report::BenchReport;

const W: f64 = 900.0;
const H: f64 = 380.0;
const PANEL: f64 = 400.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 320.0;

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    let steps = [1.0, 2.0, 2.5, 5.0, 10.0];
    steps
        .iter()
        .map(|s| s * magnitude)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * magnitude)
}

fn axis(svg: &mut String, x0: f64, max: f64, label: &str, unit: impl Fn(f64) -> String) {
    let _ = writeln!(
        svg,
        r##"<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{BOTTOM}" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{x0}" y1="{BOTTOM}" x2="{}" y2="{BOTTOM}" stroke="#444"/>"##,
        x0 + PANEL - 60.0
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = BOTTOM - (BOTTOM - TOP) * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text><line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##,
            x0 - 6.0,
            y + 4.0,
            unit(v),
            x0 + PANEL - 60.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="30" font-size="14" font-weight="bold">{label}</text>"#,
        x0
    );
}

/// Renders the report as SVG text.
pub fn render(report: &BenchReport) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    // Throughput panel.
    let x0 = 80.0;
    let best = report
        .engine
        .iter()
        .map(|r| r.readings_per_second)
        .fold(0.0, f64::max);
    let base = report
        .baseline
        .as_ref()
        .map_or(0.0, |b| b.readings_per_second);
    let max = nice_max(best.max(base));
    axis(&mut svg, x0, max, "readings/s by workers", |v| {
        format!("{:.1}M", v / 1e6)
    });
    let n = report.engine.len().max(1) as f64;
    let slot = (PANEL - 80.0) / n;
    for (i, r) in report.engine.iter().enumerate() {
        let h = (BOTTOM - TOP) * r.readings_per_second / max;
        let x = x0 + 10.0 + slot * i as f64;
        let _ = writeln!(
            svg,
            r##"<rect x="{x}" y="{}" width="{}" height="{h}" fill="#3b7dd8"/><text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text><text x="{}" y="{}" font-size="11" text-anchor="middle">{:.2}M</text>"##,
            BOTTOM - h,
            slot * 0.6,
            x + slot * 0.3,
            BOTTOM + 16.0,
            r.workers,
            x + slot * 0.3,
            BOTTOM - h - 4.0,
            r.readings_per_second / 1e6
        );
    }
    if base > 0.0 {
        let y = BOTTOM - (BOTTOM - TOP) * base / max;
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#d83b3b" stroke-dasharray="6 4"/><text x="{}" y="{}" font-size="11" fill="#d83b3b" text-anchor="end">plain loop</text>"##,
            x0 + PANEL - 60.0,
            x0 + PANEL - 62.0,
            y - 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">workers</text>"#,
        x0 + (PANEL - 60.0) / 2.0,
        BOTTOM + 34.0
    );

    // Latency panel.
    let x1 = 80.0 + PANEL + 60.0;
    let lat_max = nice_max(
        report
            .engine
            .iter()
            .filter_map(|r| r.close_to_durable.map(|l| l.max_ms))
            .fold(0.0, f64::max),
    );
    axis(
        &mut svg,
        x1,
        lat_max,
        "window close to durable file (ms)",
        |v| format!("{v:.0}"),
    );
    for (i, r) in report.engine.iter().enumerate() {
        let Some(latency) = r.close_to_durable else {
            continue;
        };
        let (p50, p99, max) = (latency.p50_ms, latency.p99_ms, latency.max_ms);
        let x = x1 + 10.0 + slot * i as f64;
        for (j, (v, color, name)) in [
            (p50, "#8fb8ee", "p50"),
            (p99, "#3b7dd8", "p99"),
            (max, "#1d3f73", "max"),
        ]
        .into_iter()
        .enumerate()
        {
            let h = (BOTTOM - TOP) * v / lat_max;
            let bx = x + slot * 0.2 * j as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{bx}" y="{}" width="{}" height="{h}" fill="{color}"><title>{name} {v:.1} ms</title></rect>"#,
                BOTTOM - h,
                slot * 0.18
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{} (p50/p99/max)</text>"#,
            x + slot * 0.3,
            BOTTOM + 16.0,
            r.workers
        );
    }
    let _ = writeln!(svg, "</svg>");
    svg
}
