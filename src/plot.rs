//! Charts drawn with plotters into memory (bitmap backend, embedded DejaVu font,
//! no system font library), then written atomically as PNG.

use crate::error::{LeukoError, Result};
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Makes the embedded font available as "sans-serif" (once per process).
pub fn ensure_font() {
    REGISTER.call_once(|| {
        // The font is compiled in and known to be valid.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, FONT);
    });
}

fn plot_err(e: impl std::fmt::Display) -> LeukoError {
    LeukoError::Invalid(format!("drawing a chart failed: {e}"))
}

/// Encodes an image as PNG and writes it atomically.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| LeukoError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// A vertical bar chart with the value printed above each bar.
pub fn bar_chart(
    title: &str,
    labels: &[String],
    values: &[f64],
    y_label: &str,
) -> Result<RgbImage> {
    ensure_font();
    let (w, h) = (800u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let y_max = values.iter().cloned().fold(0.0, f64::max).max(1.0) * 1.15;
        let n = labels.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_label)
            // Counts read as integers; scores in [0, 1] (kappa, accuracy) need decimals.
            .y_label_formatter(&|v| {
                if y_max <= 2.0 {
                    format!("{v:.2}")
                } else {
                    format!("{v:.0}")
                }
            })
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        let color = RGBColor(84, 72, 160);
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 15, 15);
                bar
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(
                    if y_max <= 2.0 {
                        format!("{v:.3}")
                    } else {
                        format!("{v:.0}")
                    },
                    (SegmentValue::CenterOf(i), v + y_max * 0.01),
                    ("sans-serif", 16)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err("buffer size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_chart_draws_bars() {
        let img = bar_chart("t", &["A".into(), "B".into()], &[3.0, 1.0], "n").unwrap();
        assert_eq!(img.dimensions(), (800, 500));
        let purple = img.pixels().filter(|p| p.0 == [84, 72, 160]).count();
        assert!(purple > 1000, "bars drawn: {purple} px");
    }
}
