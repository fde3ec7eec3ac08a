//! Pictures of a training run: learning curves and the confusion matrix.

use super::EpochRecord;
use crate::data::ClassLabel;
use crate::error::{LeukoError, Result};
use crate::metrics::Metrics;
use crate::plot::{ensure_font, save_png};
use crate::preprocess::InputSet;
use image::RgbImage;
use plotters::prelude::*;
use std::path::Path;

fn err(e: impl std::fmt::Display) -> LeukoError {
    LeukoError::Invalid(format!("drawing a chart failed: {e}"))
}

/// Black sans-serif text of `size` px, centred on its anchor point.
fn centred(size: i32) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(&BLACK)
        .pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        ))
}

/// Reads one figure of an epoch.
type Metric = fn(&EpochRecord) -> f64;

/// Loss (left) and kappa (right) per epoch, train and validation; the best epoch marked.
pub fn curves(path: &Path, history: &[EpochRecord], best_epoch: usize) -> Result<()> {
    ensure_font();
    let (w, h) = (1100u32, 420u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((1, 2));
        let n = history.len().max(2) as f64;
        let series: [(&str, Metric, Metric); 2] = [
            ("cross-entropy loss", |r| r.train_loss, |r| r.val_loss),
            ("Cohen's kappa", |r| r.train_kappa, |r| r.val_kappa),
        ];
        for (panel, (title, train, val)) in panels.iter().zip(series) {
            let vals: Vec<f64> = history
                .iter()
                .flat_map(|r| [train(r), val(r)])
                .filter(|v| v.is_finite())
                .collect();
            let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min).min(0.0);
            let hi = vals
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max)
                .max(1.0);
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(45)
                .build_cartesian_2d(1.0..n, lo..hi * 1.05)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(err)?;
            let blue = RGBColor(40, 90, 200);
            let orange = RGBColor(230, 120, 20);
            chart
                .draw_series(LineSeries::new(
                    history.iter().map(|r| (r.epoch as f64, train(r))),
                    blue.stroke_width(2),
                ))
                .map_err(err)?
                .label("train")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], blue.stroke_width(2))
                });
            chart
                .draw_series(LineSeries::new(
                    history.iter().map(|r| (r.epoch as f64, val(r))),
                    orange.stroke_width(2),
                ))
                .map_err(err)?
                .label("validation")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], orange.stroke_width(2))
                });
            if best_epoch > 0 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(best_epoch as f64, lo), (best_epoch as f64, hi)],
                        BLACK.mix(0.4).stroke_width(1),
                    )))
                    .map_err(err)?
                    .label(format!("best epoch {best_epoch}"))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| err("buffer"))?;
    save_png(path, &img)
}

/// The confusion matrix as a heat map with counts (rows: true, columns: predicted).
pub fn confusion(path: &Path, m: &Metrics, title: &str) -> Result<()> {
    ensure_font();
    let k = m.per_class.len();
    let cell = 90u32;
    let (left, top) = (130u32, 70u32);
    let (w, h) = (left + cell * k as u32 + 30, top + cell * k as u32 + 60);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let text = |_s: &str, size: i32| centred(size);
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, 20),
            text(title, 18),
        ))
        .map_err(err)?;
        let max = m
            .confusion
            .counts
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        for (i, row) in m.confusion.counts.iter().enumerate() {
            let row_sum: usize = row.iter().sum();
            for (j, &v) in row.iter().enumerate() {
                let x0 = (left + j as u32 * cell) as i32;
                let y0 = (top + i as u32 * cell) as i32;
                let t = v as f64 / max;
                let shade = RGBColor(
                    (255.0 - 170.0 * t) as u8,
                    (255.0 - 150.0 * t) as u8,
                    255 - (60.0 * t) as u8,
                );
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    shade.filled(),
                ))
                .map_err(err)?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    BLACK.mix(0.2),
                ))
                .map_err(err)?;
                let share = if row_sum > 0 {
                    100.0 * v as f64 / row_sum as f64
                } else {
                    0.0
                };
                let c = (x0 + cell as i32 / 2, y0 + cell as i32 / 2);
                root.draw(&Text::new(format!("{v}"), (c.0, c.1 - 9), text("", 20)))
                    .map_err(err)?;
                root.draw(&Text::new(
                    format!("{share:.0}%"),
                    (c.0, c.1 + 13),
                    text("", 12),
                ))
                .map_err(err)?;
            }
            let name = m.per_class[i].class.as_str();
            root.draw(&Text::new(
                name.to_string(),
                ((left / 2) as i32, (top + i as u32 * cell + cell / 2) as i32),
                text(name, 13),
            ))
            .map_err(err)?;
        }
        for (j, c) in m.per_class.iter().enumerate() {
            let name = c.class.as_str();
            root.draw(&Text::new(
                name.to_string(),
                (
                    (left + j as u32 * cell + cell / 2) as i32,
                    (top - 14) as i32,
                ),
                text(name, 12),
            ))
            .map_err(err)?;
        }
        root.draw(&Text::new(
            "predicted →".to_string(),
            ((left + cell * k as u32 / 2) as i32, (top - 34) as i32),
            text("", 12),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            format!(
                "accuracy {:.3}   kappa {:.3}   macro F1 {:.3}   (rows: true class)",
                m.accuracy, m.kappa, m.macro_f1
            ),
            ((w / 2) as i32, (h - 25) as i32),
            text("", 13),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| err("buffer"))?;
    save_png(path, &img)
}

/// One misclassified photo for [`error_gallery`]: the network's input and what went wrong.
pub struct ErrorTile<'a> {
    pub image_id: u32,
    pub image: &'a RgbImage,
    pub truth: &'a str,
    pub predicted: &'a str,
    /// Probability of the predicted class.
    pub confidence: f32,
}

/// The tiles of `set`'s misclassified photos; `confidence(i)` is the probability the
/// prediction gave its class for photo `i`.
pub fn error_tiles<'a>(
    set: &'a InputSet,
    classes: &'a [ClassLabel],
    preds: &[usize],
    confidence: impl Fn(usize) -> f32,
) -> Vec<ErrorTile<'a>> {
    (0..set.len())
        .filter(|&i| preds[i] != set.labels[i])
        .map(|i| ErrorTile {
            image_id: set.ids[i],
            image: &set.images[i],
            truth: classes[set.labels[i]].as_str(),
            predicted: classes[preds[i]].as_str(),
            confidence: confidence(i),
        })
        .collect()
}

/// Tiles per row of [`error_gallery`].
pub const GALLERY_COLUMNS: usize = 6;
const TILE: u32 = 160;
const CAPTION: u32 = 34;
const GALLERY_TOP: u32 = 40;

/// Width and height in pixels of the gallery of `errors` tiles (one row at least, for the
/// "no errors" line): one tile per error, [`GALLERY_COLUMNS`] to a row.
pub fn error_gallery_size(errors: usize) -> (u32, u32) {
    let rows = errors.div_ceil(GALLERY_COLUMNS).max(1) as u32;
    (
        GALLERY_COLUMNS as u32 * TILE + 20,
        GALLERY_TOP + rows * (TILE + CAPTION) + 10,
    )
}

/// The misclassified photos as a grid of the crops the network saw, each captioned with its
/// photo number, true and predicted class and the confidence, most confident errors first:
/// those are where a wrong label or a systematic confusion shows, and people judge them by eye.
pub fn error_gallery(path: &Path, tiles: &[ErrorTile], title: &str) -> Result<()> {
    ensure_font();
    let mut order: Vec<&ErrorTile> = tiles.iter().collect();
    order.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.image_id.cmp(&b.image_id))
    });
    let cols = GALLERY_COLUMNS as u32;
    let top = GALLERY_TOP;
    let (w, h) = error_gallery_size(order.len());
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let font = centred;
        root.draw(&Text::new(
            title.to_string(),
            ((w / 2) as i32, 20),
            font(17),
        ))
        .map_err(err)?;
        if order.is_empty() {
            root.draw(&Text::new(
                "no errors".to_string(),
                ((w / 2) as i32, (top + TILE / 2) as i32),
                font(15),
            ))
            .map_err(err)?;
        }
        for (k, t) in order.iter().enumerate() {
            let x0 = 10 + (k as u32 % cols) * TILE;
            let y0 = top + (k as u32 / cols) * (TILE + CAPTION);
            let side = TILE - 8;
            let crop =
                image::imageops::resize(t.image, side, side, image::imageops::FilterType::Triangle);
            let pixels = crop
                .enumerate_pixels()
                .map(|(x, y, p)| ((x0 + 4 + x) as i32, (y0 + y) as i32, p.0));
            for (x, y, [r, g, b]) in pixels {
                root.draw_pixel((x, y), &RGBColor(r, g, b)).map_err(err)?;
            }
            let cx = (x0 + TILE / 2) as i32;
            root.draw(&Text::new(
                format!("#{}  {} →", t.image_id, short(t.truth)),
                (cx, (y0 + side + 10) as i32),
                font(12),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                format!("{} ({:.2})", short(t.predicted), t.confidence),
                (cx, (y0 + side + 25) as i32),
                font(12),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| err("buffer"))?;
    save_png(path, &img)
}

/// "NEUTROPHIL" → "neutrophil": captions are read, not shouted.
fn short(class: &str) -> String {
    class.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_gallery_has_a_tile_per_error_and_a_line_when_there_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let crop = RgbImage::from_pixel(128, 128, image::Rgb([120, 80, 200]));
        let tiles: Vec<ErrorTile> = (0..7)
            .map(|i| ErrorTile {
                image_id: i,
                image: &crop,
                truth: "NEUTROPHIL",
                predicted: "EOSINOPHIL",
                confidence: 0.5 + i as f32 / 20.0,
            })
            .collect();
        let path = dir.path().join("errors.png");
        error_gallery(&path, &tiles, "seven").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), error_gallery_size(7));
        assert_eq!(
            error_gallery_size(7).1,
            error_gallery_size(12).1,
            "two rows"
        );
        assert!(error_gallery_size(13).1 > error_gallery_size(12).1);
        // The crop's colour is drawn at the first tile's place.
        assert_eq!(
            img.get_pixel(10 + 4 + 50, GALLERY_TOP + 50).0,
            [120, 80, 200]
        );

        let empty = dir.path().join("none.png");
        error_gallery(&empty, &[], "none").unwrap();
        let img = image::open(&empty).unwrap();
        assert_eq!((img.width(), img.height()), error_gallery_size(0));
        assert_eq!(error_gallery_size(0), error_gallery_size(1));
    }
}
