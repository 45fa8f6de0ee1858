//! The experiment report: `RUN/report.md` and a self-contained `RUN/report.html` (plots inline as SVG,
//! GIFs inline as data URIs, so it opens offline and can be mailed as one file).
//!
//! Tables follow the paper: success rates BC vs refined per task with 95 % Wilson intervals (the shape of
//! Table II) and world-model fidelity per horizon against copy-last-frame.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::eval::evaluate::{newcombe_difference_interval, Z95};

/// A success rate with its 95 % Wilson interval.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rate {
    /// Successful episodes.
    pub successes: usize,
    /// Episodes.
    pub episodes: usize,
    /// Lower bound of the 95 % interval.
    pub lo: f64,
    /// Upper bound of the 95 % interval.
    pub hi: f64,
}

impl Rate {
    /// Point estimate.
    pub fn rate(&self) -> f64 {
        if self.episodes == 0 {
            0.0
        } else {
            self.successes as f64 / self.episodes as f64
        }
    }

    /// `55.5 % [48.6, 62.2] (111/200)`: the success tables' cell.
    pub fn cell(&self) -> String {
        format!(
            "{:.1} % [{:.1}, {:.1}] ({}/{})",
            100.0 * self.rate(),
            100.0 * self.lo,
            100.0 * self.hi,
            self.successes,
            self.episodes
        )
    }

    /// `+18.0 [+9.2, +26.4]`: `other`'s rate minus this one's in points, with the 95 % Newcombe
    /// interval of the difference (the success tables' Δ cell; `self` is BC, `other` the refined policy).
    pub fn delta_cell(&self, other: &Rate) -> String {
        let (lo, hi) = newcombe_difference_interval(
            self.successes,
            self.episodes,
            other.successes,
            other.episodes,
            Z95,
        );
        format!(
            "{:+.1} [{:+.1}, {:+.1}]",
            100.0 * (other.rate() - self.rate()),
            100.0 * lo,
            100.0 * hi
        )
    }
}

/// One row of the success table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SuccessRow {
    /// Task name.
    pub task: String,
    /// The BC policy in the real environment.
    pub bc: Option<Rate>,
    /// The refined policy in the real environment.
    pub refined: Option<Rate>,
}

/// One row of the fidelity table (open-loop imagination vs real frames, held-out episodes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FidelityRow {
    /// Imagination step (1 = next frame).
    pub horizon: usize,
    /// PSNR of the world model, dB.
    pub psnr: f64,
    /// SSIM of the world model.
    pub ssim: f64,
    /// PSNR of copying the last real context frame, dB.
    pub psnr_copy: f64,
    /// SSIM of copying the last real context frame.
    pub ssim_copy: f64,
}

/// A line chart.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Title above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Named series of (x, y) points.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// A logarithmic y axis (for losses that fall by orders of magnitude); values ≤ 0 are left out.
    pub log_y: bool,
}

/// Everything a report shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Title (experiment name).
    pub title: String,
    /// Key facts: config file, preset, machine, timings.
    pub facts: Vec<(String, String)>,
    /// Tables the report leads with, right after the facts: (title, header, rows).
    pub lead: Vec<(String, Vec<String>, Vec<Vec<String>>)>,
    /// Ablation switches and their values.
    pub switches: Vec<(String, String)>,
    /// Success table.
    pub success: Vec<SuccessRow>,
    /// Fidelity table.
    pub fidelity: Vec<FidelityRow>,
    /// Extra tables: (title, header, rows).
    pub tables: Vec<(String, Vec<String>, Vec<Vec<String>>)>,
    /// Training curves.
    pub charts: Vec<Chart>,
    /// GIFs: (caption, file).
    pub gifs: Vec<(String, PathBuf)>,
}

/// The series' colours (matplotlib's first six), shared by every figure of the reports.
pub(crate) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The series' legend box of a chart.
fn draw_legend<'a>(
    c: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<()> {
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Renders a chart to an SVG string. Each series is a line with its own marker shape, so series that
/// coincide stay visible.
pub fn chart_svg(chart: &Chart) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    // a log axis plots log10(y) and labels the ticks with y
    let fy = |y: f64| if chart.log_y { y.log10() } else { y };
    let series: Vec<(&str, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|(name, p)| {
            let pts = p
                .iter()
                .filter(|(_, y)| !chart.log_y || *y > 0.0)
                .map(|&(x, y)| (x, fy(y)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (name.as_str(), pts)
        })
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in series.iter().flat_map(|(_, p)| p.iter()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?;
        let log = chart.log_y;
        let y_fmt = move |v: &f64| {
            if log {
                format!("{:.0e}", 10f64.powf(*v))
            } else {
                format!("{v:.3}")
            }
        };
        // steps and iterations are whole numbers: no ".0" on their ticks
        let x_fmt = |v: &f64| {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        c.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, pts)) in series.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let style = color.stroke_width(2);
            c.draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            // markers only where they stay readable
            if pts.len() <= 80 {
                let marker = move |p: (f64, f64)| -> DynElement<'static, SVGBackend, (f64, f64)> {
                    match i % 3 {
                        0 => Circle::new(p, 3, color.filled()).into_dyn(),
                        1 => TriangleMarker::new(p, 5, color.filled()).into_dyn(),
                        _ => Cross::new(p, 4, color.stroke_width(2)).into_dyn(),
                    }
                };
                c.draw_series(pts.into_iter().map(marker))
                    .map_err(|e| err(&e))?;
            }
        }
        if chart.series.len() > 1 {
            draw_legend(&mut c)?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// The x-axis labels of a per-task figure whose task `i` sits at `x = i`: the task's name on its
/// integer tick, nothing between.
pub(crate) fn task_ticks(names: Vec<String>) -> impl Fn(&f64) -> String {
    move |x: &f64| {
        let k = x.round();
        if (x - k).abs() < 1e-6 && k >= 0.0 {
            names.get(k as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// BC against refined per task: each success rate as a dot with its 95 % interval as a bar.
pub fn success_svg(rows: &[SuccessRow]) -> Result<String> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let n = rows.len().max(1);
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, ((160 * n).max(360) as u32, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "real success rate, 95 % Wilson interval",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..100.0)
            .map_err(|e| err(&e))?;
        let x_fmt = task_ticks(rows.iter().map(|r| r.task.clone()).collect());
        c.configure_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&x_fmt)
            .y_desc("%")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(&e))?;
        for (j, (label, offset)) in [("BC", -0.12), ("refined", 0.12)].into_iter().enumerate() {
            let color = COLORS[j];
            let pts: Vec<(f64, Rate)> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let rate = if j == 0 { r.bc } else { r.refined };
                    rate.map(|v| (i as f64 + offset, v))
                })
                .collect();
            c.draw_series(pts.iter().map(|(x, r)| {
                ErrorBar::new_vertical(
                    *x,
                    100.0 * r.lo,
                    100.0 * r.rate(),
                    100.0 * r.hi,
                    color.filled().stroke_width(2),
                    10,
                )
            }))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        draw_legend(&mut c)?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(
        s,
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

fn html_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Report {
    fn success_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let cell = |r: &Option<Rate>| r.map(|r| r.cell()).unwrap_or_else(|| "-".into());
        let mut rows: Vec<Vec<String>> = self
            .success
            .iter()
            .map(|r| {
                let delta = match (r.bc, r.refined) {
                    (Some(b), Some(f)) => b.delta_cell(&f),
                    _ => "-".into(),
                };
                vec![r.task.clone(), cell(&r.bc), cell(&r.refined), delta]
            })
            .collect();
        let both: Vec<&SuccessRow> = self
            .success
            .iter()
            .filter(|r| r.bc.is_some() && r.refined.is_some())
            .collect();
        if both.len() > 1 {
            let n = both.len() as f64;
            let b: f64 = both.iter().map(|r| r.bc.unwrap().rate()).sum::<f64>() / n;
            let f: f64 = both.iter().map(|r| r.refined.unwrap().rate()).sum::<f64>() / n;
            rows.push(vec![
                "average".into(),
                format!("{:.1} %", 100.0 * b),
                format!("{:.1} %", 100.0 * f),
                format!("{:+.1}", 100.0 * (f - b)),
            ]);
        }
        (
            vec!["task", "BC", "World4RL (refined)", "Δ points [95 % CI]"],
            rows,
        )
    }

    fn fidelity_rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let rows = self
            .fidelity
            .iter()
            .map(|r| {
                vec![
                    r.horizon.to_string(),
                    format!("{:.2}", r.psnr),
                    format!("{:.2}", r.psnr_copy),
                    format!("{:.3}", r.ssim),
                    format!("{:.3}", r.ssim_copy),
                ]
            })
            .collect();
        (
            vec![
                "horizon",
                "PSNR world model (dB)",
                "PSNR copy-last (dB)",
                "SSIM world model",
                "SSIM copy-last",
            ],
            rows,
        )
    }

    /// Writes `dir/report.md` (with plots as `dir/plots/*.svg`) and `dir/report.html`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let plots = dir.join("plots");
        std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
        let mut md = String::new();
        let mut html = String::new();
        let _ = writeln!(md, "# {}\n", self.title);
        let _ = write!(
            html,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
             body{{font-family:sans-serif;margin:1.5em 2vw;color:#222}}\
             table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
             th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
             .grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1em}}\
             figure{{margin:.5em}}figure svg{{width:100%;height:auto}}figure.wide{{max-width:900px}}\
             img{{image-rendering:pixelated;width:100%;max-width:512px}}</style></head><body><h1>{}</h1>",
            esc(&self.title),
            esc(&self.title)
        );
        if !self.facts.is_empty() {
            let rows: Vec<Vec<String>> = self
                .facts
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect();
            md.push_str(&md_table(&["", ""], &rows));
            html.push_str(&html_table(&["", ""], &rows));
        }
        for (title, header, rows) in &self.lead {
            let h: Vec<&str> = header.iter().map(String::as_str).collect();
            let _ = writeln!(md, "\n## {title}\n");
            md.push_str(&md_table(&h, rows));
            let _ = write!(html, "<h2>{}</h2>", esc(title));
            html.push_str(&html_table(&h, rows));
        }
        if !self.switches.is_empty() {
            let rows: Vec<Vec<String>> = self
                .switches
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect();
            md.push_str("\n## Ablation switches of this run\n\n");
            md.push_str(&md_table(&["switch", "value"], &rows));
            html.push_str("<h2>Ablation switches of this run</h2>");
            html.push_str(&html_table(&["switch", "value"], &rows));
        }
        if !self.success.is_empty() {
            let (h, rows) = self.success_rows();
            md.push_str("\n## Success rate in the real environment (95 % Wilson intervals)\n\n");
            md.push_str(&md_table(&h, &rows));
            html.push_str("<h2>Success rate in the real environment (95 % Wilson intervals)</h2>");
            html.push_str(&html_table(&h, &rows));
            let svg = success_svg(&self.success)?;
            w4rl_data::write_atomic(&plots.join("success.svg"), svg.as_bytes())?;
            md.push_str("\n![real success rate, BC against refined](plots/success.svg)\n");
            let _ = write!(html, "<figure class=\"wide\">{svg}</figure>");
        }
        if !self.fidelity.is_empty() {
            let (h, rows) = self.fidelity_rows();
            md.push_str("\n## World-model fidelity (open-loop, held-out episodes)\n\n");
            md.push_str(&md_table(&h, &rows));
            html.push_str("<h2>World-model fidelity (open-loop, held-out episodes)</h2>");
            html.push_str(&html_table(&h, &rows));
        }
        for (title, header, rows) in &self.tables {
            let h: Vec<&str> = header.iter().map(String::as_str).collect();
            let _ = writeln!(md, "\n## {title}\n");
            md.push_str(&md_table(&h, rows));
            let _ = write!(html, "<h2>{}</h2>", esc(title));
            html.push_str(&html_table(&h, rows));
        }
        if !self.charts.is_empty() {
            md.push_str("\n## Training curves\n\n");
            html.push_str("<h2>Training curves</h2><div class=\"grid\">");
            for (i, chart) in self.charts.iter().enumerate() {
                let svg = chart_svg(chart)?;
                let name = format!("plot-{i:02}.svg");
                w4rl_data::write_atomic(&plots.join(&name), svg.as_bytes())?;
                let _ = writeln!(md, "![{}](plots/{name})\n", chart.title);
                let _ = write!(html, "<figure>{svg}</figure>");
            }
            html.push_str("</div>");
        }
        if !self.gifs.is_empty() {
            md.push_str("\n## Rollouts\n\n");
            html.push_str("<h2>Rollouts</h2><div class=\"grid\">");
            for (caption, path) in &self.gifs {
                let rel = path.strip_prefix(dir).unwrap_or(path);
                let _ = writeln!(md, "**{caption}**\n\n![{caption}]({})\n", rel.display());
                match std::fs::read(path) {
                    Ok(bytes) => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                        let _ = write!(
                            html,
                            "<figure><img src=\"data:image/gif;base64,{b64}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
                            esc(caption),
                            esc(caption)
                        );
                    }
                    Err(e) => {
                        let _ = write!(
                            html,
                            "<p>missing GIF {}: {}</p>",
                            esc(&path.display().to_string()),
                            esc(&e.to_string())
                        );
                    }
                }
            }
        }
        if !self.gifs.is_empty() {
            html.push_str("</div>");
        }
        html.push_str("</body></html>\n");
        w4rl_data::write_atomic(&dir.join("report.md"), md.as_bytes())?;
        w4rl_data::write_atomic(&dir.join("report.html"), html.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_tables_and_inline_plots() {
        let dir = tempfile::tempdir().unwrap();
        let r = Report {
            title: "t".into(),
            success: vec![SuccessRow {
                task: "push-block".into(),
                bc: Some(Rate {
                    successes: 40,
                    episodes: 100,
                    lo: 0.31,
                    hi: 0.5,
                }),
                refined: Some(Rate {
                    successes: 70,
                    episodes: 100,
                    lo: 0.6,
                    hi: 0.78,
                }),
            }],
            fidelity: vec![FidelityRow {
                horizon: 1,
                psnr: 30.0,
                ssim: 0.9,
                psnr_copy: 25.0,
                ssim_copy: 0.8,
            }],
            charts: vec![Chart {
                title: "loss".into(),
                x_label: "step".into(),
                series: vec![
                    ("train".into(), vec![(0.0, 1.0), (1.0, 0.5)]),
                    ("held-out".into(), vec![(0.0, 1.0), (1.0, 0.5)]),
                ],
                log_y: true,
            }],
            ..Default::default()
        };
        r.write(dir.path()).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| push-block | 40.0 % [31.0, 50.0] (40/100) | 70.0 % [60.0, 78.0] (70/100) | +30.0 [+16.3, +42.2] |"), "{md}");
        assert!(md.contains("| 1 | 30.00 | 25.00 | 0.900 | 0.800 |"), "{md}");
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<svg") && html.contains("<table>"));
        assert!(dir.path().join("plots/plot-00.svg").exists());
        // the BC-against-refined chart, and two coinciding series each drawn with its own marker
        assert!(dir.path().join("plots/success.svg").exists());
        let plot = std::fs::read_to_string(dir.path().join("plots/plot-00.svg")).unwrap();
        assert!(
            plot.contains("<circle") && plot.contains("<polygon"),
            "{plot}"
        );
        assert!(
            plot.contains("1e0") && plot.contains("5e-1"),
            "log-scale tick labels: {plot}"
        );
    }
}
