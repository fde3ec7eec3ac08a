//! The one wire format of predictions, shared by `leuko predict --format json`, the
//! `POST /api/classify` answer and the report: one serde type per photo ([`PhotoRecord`]),
//! per cell ([`CellRecord`]) and per differential count ([`Differential`]).
//!
//! ```text
//! photo: {"file", "ok", "width", "height", "unfamiliarity", "review", "review_reasons",
//!         "cells": [cell], "error"}
//! cell:  {"cell", "box": {"x_min", "y_min", "x_max", "y_max"}, "class", "confidence",
//!         "probabilities": {CLASS: p}, "review", "review_reasons": [reason],
//!         "morphometrics": {"cell_area_px", "nucleus_area_px", "nc_ratio", "nucleus_lobes",
//!                           "circularity"},
//!         "morphometrics_um": {"cell_area_um2", "nucleus_area_um2", "cell_diameter_um"}
//!                             (only when the scale is known),
//!         "outline": {"cell": [[[x, y], ...]], "nucleus": [[[x, y], ...], ...]},
//!         "crop_png_base64" (API only)}
//! ```
//!
//! Classes are spelled as the model stores them (`NEUTROPHIL`), in `class` and as the keys of
//! `probabilities` alike, which follow the model's output order. Boxes are photo pixels, max
//! exclusive, and a cell's box is the bounding box of its outline, whose polygons run along pixel
//! corners (a polygon encloses exactly its pixels; one per separate piece, largest first). `cell` numbers a photo's leukocytes from 1, largest first. A photo that could not
//! be read has `ok` false, no `width` / `height`, no cells, and the reason in `error`. A photo's
//! `review_reasons` are `no_leukocyte_found` and `unfamiliar_photo` (its `unfamiliarity` above 1:
//! unlike the model's training photos; `null` for a model that records no profile of them).

use crate::data::ClassLabel;
use crate::isolate::{Morphometrics, MorphometricsUm, Outline};
use crate::predict::{CellPrediction, PhotoPrediction, ReviewReason};
use base64::Engine as _;
use image::ImageEncoder as _;
use serde::ser::SerializeMap;
use serde::Serialize;

/// What happened to one input photo.
#[derive(Debug, Clone)]
pub struct PhotoResult {
    /// The path as given (or found in a folder), as shown to people.
    pub file: String,
    /// The predictions, or why the photo could not be read.
    pub outcome: Result<PhotoPrediction, String>,
}

impl PhotoResult {
    pub fn cells(&self) -> &[CellPrediction] {
        match &self.outcome {
            Ok(p) => &p.cells,
            Err(_) => &[],
        }
    }
}

/// A cell's box in photo pixels, max exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BoxRecord {
    pub x_min: u32,
    pub y_min: u32,
    pub x_max: u32,
    pub y_max: u32,
}

/// One probability per class, serialised as a JSON object in the model's class order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassProbabilities(pub Vec<(ClassLabel, f32)>);

impl Serialize for ClassProbabilities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, p) in &self.0 {
            m.serialize_entry(k.as_str(), p)?;
        }
        m.end()
    }
}

/// One classified leukocyte.
#[derive(Debug, Clone, Serialize)]
pub struct CellRecord {
    pub cell: usize,
    #[serde(rename = "box")]
    pub bbox: BoxRecord,
    pub class: ClassLabel,
    pub confidence: f32,
    pub probabilities: ClassProbabilities,
    pub review: bool,
    pub review_reasons: Vec<ReviewReason>,
    pub morphometrics: Morphometrics,
    /// The same in micrometres; left out when the photo's scale is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub morphometrics_um: Option<MorphometricsUm>,
    /// Cell and nucleus polygons in photo pixel corners.
    pub outline: Outline,
    /// The network input as a base64 PNG, when asked for ([`PhotoRecord::new`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_png_base64: Option<String>,
}

impl CellRecord {
    pub fn new(c: &CellPrediction, classes: &[ClassLabel], with_crop: bool) -> CellRecord {
        CellRecord {
            cell: c.cell,
            bbox: BoxRecord {
                x_min: c.bbox.x_min,
                y_min: c.bbox.y_min,
                x_max: c.bbox.x_max,
                y_max: c.bbox.y_max,
            },
            class: c.class,
            confidence: c.confidence,
            probabilities: ClassProbabilities(
                classes
                    .iter()
                    .copied()
                    .zip(c.probabilities.iter().copied())
                    .collect(),
            ),
            review: c.review,
            review_reasons: c.review_reasons.clone(),
            morphometrics: c.morphometrics,
            morphometrics_um: c.morphometrics_um,
            outline: c.mask.outline(),
            crop_png_base64: if with_crop { png_base64(&c.crop) } else { None },
        }
    }
}

/// Everything said about one input photo.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoRecord {
    pub file: String,
    pub ok: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub unfamiliarity: Option<f32>,
    pub review: bool,
    pub review_reasons: Vec<ReviewReason>,
    pub cells: Vec<CellRecord>,
    pub error: Option<String>,
}

impl PhotoRecord {
    /// The record of a photo's outcome; `with_crops` adds each cell's network input.
    pub fn new(
        file: &str,
        outcome: &Result<PhotoPrediction, String>,
        classes: &[ClassLabel],
        with_crops: bool,
    ) -> PhotoRecord {
        match outcome {
            Ok(p) => PhotoRecord {
                file: file.to_string(),
                ok: true,
                width: Some(p.width),
                height: Some(p.height),
                unfamiliarity: p.unfamiliarity,
                review: p.review,
                review_reasons: p.review_reasons.clone(),
                cells: p
                    .cells
                    .iter()
                    .map(|c| CellRecord::new(c, classes, with_crops))
                    .collect(),
                error: None,
            },
            Err(e) => PhotoRecord {
                file: file.to_string(),
                ok: false,
                width: None,
                height: None,
                unfamiliarity: None,
                review: false,
                review_reasons: Vec::new(),
                cells: Vec::new(),
                error: Some(e.clone()),
            },
        }
    }
}

/// PNG bytes of `img` in base64, or `None` if it cannot be encoded (an empty image).
pub fn png_base64(img: &image::RgbImage) -> Option<String> {
    if img.width() == 0 || img.height() == 0 {
        return None;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(png))
}

/// The differential count of a batch of photos.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Differential {
    /// Photos classified (unreadable files are not counted).
    pub photos: usize,
    /// Of those, photos in which no leukocyte was found.
    pub photos_without_leukocyte: usize,
    /// Of those, photos unlike the model's training photos.
    pub photos_unfamiliar: usize,
    /// Photos a person should look at (no leukocyte found, or unfamiliar).
    pub photos_to_review: usize,
    /// When many photos are unfamiliar: what that means and what to do
    /// ([`crate::familiar::batch_warning`]).
    pub warning: Option<String>,
    /// Leukocytes found in them.
    pub cells: usize,
    /// Of those, flagged for review (still counted under their predicted type).
    pub flagged_for_review: usize,
    /// The five standard types in the clinical order ([`ClassLabel::CLINICAL_ORDER`]), also
    /// those the model does not know (`in_model` false, count 0), then the model's other
    /// classes by name.
    pub counts: Vec<TypeCount>,
}

/// One line of the differential count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeCount {
    pub class: ClassLabel,
    pub count: usize,
    /// Share of all leukocytes found, 0-100 (0 when there are none).
    pub percent: f64,
    /// Of `count`, how many are flagged for review.
    pub flagged: usize,
    /// False when the model cannot predict this type.
    pub in_model: bool,
}

/// The differential count of the photos classified.
pub fn differential<'a>(
    photos: impl IntoIterator<Item = &'a PhotoPrediction>,
    classes: &[ClassLabel],
) -> Differential {
    let photos: Vec<&PhotoPrediction> = photos.into_iter().collect();
    let cells: Vec<&CellPrediction> = photos.iter().flat_map(|p| &p.cells).collect();
    let total = cells.len();
    let mut types: Vec<ClassLabel> = ClassLabel::CLINICAL_ORDER.to_vec();
    let mut others: Vec<ClassLabel> = classes
        .iter()
        .copied()
        .filter(|c| !c.is_standard())
        .collect();
    others.sort();
    types.extend(others);
    let counts = types
        .iter()
        .map(|&class| {
            let of_type = cells.iter().filter(|c| c.class == class);
            let count = of_type.clone().count();
            TypeCount {
                class,
                count,
                percent: if total == 0 {
                    0.0
                } else {
                    100.0 * count as f64 / total as f64
                },
                flagged: of_type.filter(|c| c.review).count(),
                in_model: classes.contains(&class),
            }
        })
        .collect();
    let unfamiliar = photos.iter().filter(|p| p.unfamiliar()).count();
    Differential {
        photos: photos.len(),
        photos_without_leukocyte: photos.iter().filter(|p| p.cells.is_empty()).count(),
        photos_unfamiliar: unfamiliar,
        photos_to_review: photos.iter().filter(|p| p.review).count(),
        warning: crate::familiar::batch_warning(unfamiliar, photos.len()),
        cells: total,
        flagged_for_review: cells.iter().filter(|c| c.review).count(),
        counts,
    }
}

/// The differential of a batch's results (photos that could not be read are left out).
pub fn differential_of(results: &[PhotoResult], classes: &[ClassLabel]) -> Differential {
    differential(
        results.iter().filter_map(|r| r.outcome.as_ref().ok()),
        classes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::LeukocyteBox;

    fn cell(class: ClassLabel, review: bool) -> CellPrediction {
        let bbox = LeukocyteBox {
            x_min: 1,
            y_min: 2,
            x_max: 30,
            y_max: 40,
            area_px: 1,
        };
        CellPrediction {
            cell: 1,
            bbox,
            crop_box: bbox,
            crop_window: crate::isolate::CropWindow {
                x: bbox.x_min as i64,
                y: bbox.y_min as i64,
                width: (bbox.x_max - bbox.x_min) as i64,
                height: (bbox.y_max - bbox.y_min) as i64,
            },
            mask: crate::isolate::CellMask::empty(1, 2, 29, 38),
            morphometrics: Morphometrics::default(),
            morphometrics_um: None,
            class,
            confidence: 0.9,
            probabilities: vec![0.9, 0.1],
            review,
            review_reasons: Vec::new(),
            crop: image::RgbImage::new(0, 0),
        }
    }

    /// A lab's own class is counted after the standard types, which are all listed.
    #[test]
    fn differential_lists_standard_types_then_the_models_own_classes() {
        let blast = ClassLabel::named("blast").unwrap();
        let classes = [ClassLabel::Neutrophil, blast];
        let photo = PhotoPrediction {
            width: 64,
            height: 64,
            cells: vec![
                cell(blast, true),
                cell(blast, false),
                cell(ClassLabel::Neutrophil, false),
            ],
            unfamiliarity: Some(0.5),
            review: false,
            review_reasons: Vec::new(),
        };
        let empty = PhotoPrediction {
            width: 64,
            height: 64,
            cells: Vec::new(),
            unfamiliarity: Some(1.5),
            review: true,
            review_reasons: vec![
                ReviewReason::NoLeukocyteFound,
                ReviewReason::UnfamiliarPhoto,
            ],
        };
        let d = differential([&photo, &empty], &classes);
        assert_eq!((d.photos, d.photos_without_leukocyte), (2, 1));
        assert_eq!((d.photos_unfamiliar, d.photos_to_review), (1, 1));
        assert!(d.warning.as_deref().unwrap().contains("1 of 2 photos"));
        assert_eq!((d.cells, d.flagged_for_review), (3, 1));
        let names: Vec<&str> = d.counts.iter().map(|t| t.class.as_str()).collect();
        assert_eq!(
            names,
            [
                "NEUTROPHIL",
                "LYMPHOCYTE",
                "MONOCYTE",
                "EOSINOPHIL",
                "BASOPHIL",
                "BLAST"
            ]
        );
        let b = &d.counts[5];
        assert_eq!((b.count, b.flagged, b.in_model), (2, 1, true));
        assert!((b.percent - 200.0 / 3.0).abs() < 1e-9);
        assert!(!d.counts[1].in_model && d.counts[0].in_model);
        // The JSON record keys probabilities as the class is spelled, in the model's order.
        let rec = CellRecord::new(&photo.cells[0], &classes, false);
        let j = serde_json::to_string(&rec).unwrap();
        assert!(
            j.contains(r#""probabilities":{"NEUTROPHIL":0.9,"BLAST":0.1}"#),
            "{j}"
        );
        assert!(
            j.contains(r#""box":{"x_min":1,"y_min":2,"x_max":30,"y_max":40}"#),
            "{j}"
        );
        assert!(!j.contains("crop_png_base64"), "{j}");
    }
}
