//! PNG plots of a report, drawn with `plotters` (bitmap backend). Text goes through
//! `ab_glyph` with DejaVu Sans read from the host (Debian `fonts-dejavu-core`, which
//! scripts/setup installs), so nothing needs fontconfig or freetype.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Report;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (1000, 640);
const COLORS: [RGBColor; 6] = [
    RGBColor(0x44, 0x44, 0x44),
    RGBColor(0x99, 0x66, 0x00),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Makes the font known to plotters (once per process).
fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT)
            .map_err(|e| format!("read {FONT} (Debian package fonts-dejavu-core): {e}"))?;
        // plotters keeps the font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT}: not a font plotters can read"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws every plot the report has data for into `dir`; returns the files written.
pub fn draw(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut written = Vec::new();
    let path = dir.join("latency-cdf.png");
    latency_cdf(report, &path).context("latency CDF plot")?;
    written.push(path);
    if !report.throughput.is_empty() {
        let path = dir.join("throughput.png");
        throughput(report, &path).context("throughput plot")?;
        written.push(path);
    }
    if !report.memory.levels.is_empty() {
        let path = dir.join("memory.png");
        memory(report, &path).context("memory plot")?;
        written.push(path);
    }
    Ok(written)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// Empirical CDFs of A, B, our warm run and our creates, on a log time axis.
fn latency_cdf(report: &Report, path: &Path) -> anyhow::Result<()> {
    let keys = [
        "bare",
        "bwrap",
        "run",
        "create",
        "create_first_run",
        "create_cold",
    ];
    let series: Vec<_> = keys.iter().filter_map(|k| report.series(k)).collect();
    let all_ms = series
        .iter()
        .flat_map(|s| s.samples.iter().map(|d| d.as_secs_f64() * 1e3));
    let (lo, hi) = all_ms.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        bail!("no samples");
    }
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency CDF (ms, log scale)", ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .x_desc("milliseconds")
        .y_desc("fraction of samples <= x")
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let mut ms: Vec<f64> = s.samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len() as f64;
        let points = ms.iter().enumerate().map(|(j, v)| (*v, (j + 1) as f64 / n));
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(s.label.trim())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(err)
}

/// Runs per second and p99 latency against concurrent clients.
fn throughput(report: &Report, path: &Path) -> anyhow::Result<()> {
    let t = &report.throughput;
    let max_clients = t.iter().map(|t| t.clients).max().unwrap_or(1) as f64;
    let rates: Vec<(f64, f64)> = t
        .iter()
        .map(|t| (t.clients as f64, t.runs as f64 / t.secs))
        .collect();
    let max_rate = rates.iter().map(|r| r.1).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Warm print(1) runs per second vs concurrent clients",
            ("sans-serif", 26),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0.7..max_clients * 2.0).log_scale(), 0f64..max_rate * 1.2)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .x_desc("concurrent clients (each on its own sandbox)")
        .y_desc("runs per second")
        .draw()
        .map_err(err)?;
    let color = COLORS[2];
    chart
        .draw_series(LineSeries::new(rates.clone(), color.stroke_width(2)))
        .map_err(err)?
        .label("runs/s")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(t.iter().zip(&rates).map(|(t, &(x, y))| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 4, color.filled())
                + Text::new(
                    format!("{y:.0}/s, p99 {:.1} ms", t.latency.p99),
                    (6, -18),
                    ("sans-serif", 15),
                )
        }))
        .map_err(err)?;
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Memory per idle sandbox against the number of idle sandboxes.
fn memory(report: &Report, path: &Path) -> anyhow::Result<()> {
    let levels = &report.memory.levels;
    let max_n = levels.iter().map(|l| l.sandboxes).max().unwrap_or(10) as f64;
    let lines: [(&str, Vec<(f64, f64)>); 3] = [
        (
            "PSS of the helper trees",
            levels.iter().map(|l| (l.sandboxes as f64, l.pss)).collect(),
        ),
        (
            "sandbox cgroup usage",
            levels
                .iter()
                .filter_map(|l| Some((l.sandboxes as f64, l.cgroup?)))
                .collect(),
        ),
        (
            "MemAvailable drop",
            levels
                .iter()
                .map(|l| (l.sandboxes as f64, l.mem_available))
                .collect(),
        ),
    ];
    let values = || lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.1));
    let max_mib = values().fold(1.0, f64::max);
    // The MemAvailable drop can be negative at a small level (the page cache moved more).
    let min_mib = values().fold(0.0, f64::min);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Host memory per idle workers sandbox", ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (5.0..max_n * 1.6).log_scale(),
            min_mib * 1.25..max_mib * 1.25,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .x_desc("idle sandboxes alive")
        .y_desc("MiB per sandbox")
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in lines.into_iter().enumerate() {
        let color = COLORS[(i + 2) % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(err)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cerver_bench::stats::Summary;

    use super::*;
    use crate::report::Series;
    use crate::scale::{Level, Memory, Throughput};

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    /// Every plot is drawn as a PNG, a negative MemAvailable drop included (it happens at
    /// small levels).
    #[test]
    fn draws_every_plot() {
        let summary = Summary::of(&ms(&[1, 2, 3])).unwrap();
        let level = |sandboxes, mem_available| Level {
            sandboxes,
            pss: 9.6,
            pss_anon: 9.5,
            cgroup: Some(9.3),
            mem_available,
            processes: 5 * sandboxes,
            server_rss: 20.0,
            server_pss: 15.0,
            template_rss: Some(25.0),
            create: summary.clone(),
            run: summary.clone(),
        };
        let report = Report {
            machine: serde_json::json!({}),
            command: String::new(),
            baselines: vec![Series::new("bare", "A", ms(&[5, 6, 7]))],
            ours: vec![
                Series::new("run", "run", ms(&[2, 3, 4])),
                Series::new("create", "create", ms(&[1, 1, 2])),
            ],
            skipped: Vec::new(),
            first_install: None,
            throughput: [1, 4]
                .map(|clients| Throughput {
                    clients,
                    runs: 100 * clients,
                    secs: 1.0,
                    latency: summary.clone(),
                })
                .into(),
            throughput_failure: None,
            memory: Memory {
                levels: vec![level(10, -16.0), level(100, 8.4)],
                failure: None,
            },
            notes: Vec::new(),
            elapsed: Duration::ZERO,
        };
        let dir = std::env::temp_dir().join(format!("cerver-bench-plots-{}", std::process::id()));
        let files = draw(&report, &dir).unwrap();
        assert_eq!(files.len(), 3);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.len() > 1000,
                "{}",
                f.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
