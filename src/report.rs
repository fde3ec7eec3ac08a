//! Turning predictions into what people read: the CSV, JSON and table of
//! `leuko predict`, and the self-contained HTML differential-count report of
//! `leuko report`. Everything here is a pure function of the predictions (no
//! clock, no file access), so the same predictions give the same bytes.
//!
//! CSV columns (one row per leukocyte, photos in input order, cells largest first):
//!
//! ```text
//! file,cell,x_min,y_min,x_max,y_max,class,confidence,p_neutrophil,p_eosinophil,p_lymphocyte,p_monocyte,review,review_reasons,unfamiliarity,cell_area_px,nucleus_area_px,nc_ratio,nucleus_lobes,circularity,cell_area_um2,nucleus_area_um2,cell_diameter_um
//! ```
//!
//! The `p_` columns follow the model's classes in its output order. A photo
//! in which no leukocyte was found gives one row with `cell` 0, class `none`,
//! empty box, confidence and probability fields, `review` true and the reason
//! `no_leukocyte_found`. `review_reasons` lists a flagged cell's reasons separated by `;` (empty
//! when not flagged). `unfamiliarity` is the photo's ([`crate::familiar`]: above 1, the photo looks
//! unlike the model's training photos; empty for a model that records no profile of them).
//! The last eight columns measure the cell's outline ([`crate::isolate::Morphometrics`]; box
//! = the outline's bounding box); the micrometre ones are empty when the scale is unknown.
//! Unreadable photos give no row (they are reported on stderr and in JSON).

use crate::data::ClassLabel;
use crate::predict::CellPrediction;
use crate::predict::{ReviewReason, ReviewRules};
use crate::wire::PhotoRecord;
pub use crate::wire::{differential_of, PhotoResult, TypeCount};
use std::fmt::Write as _;

/// The `class` value of the row of a photo without a leukocyte.
pub const NO_CELL_CLASS: &str = "none";

/// Gallery crops shown per type in the HTML report unless told otherwise.
pub const DEFAULT_GALLERY_CAP: usize = 60;

/// The CSV header for a model with these classes.
pub fn csv_header(classes: &[ClassLabel]) -> Vec<String> {
    let mut h: Vec<String> = [
        "file",
        "cell",
        "x_min",
        "y_min",
        "x_max",
        "y_max",
        "class",
        "confidence",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    h.extend(classes.iter().map(|c| format!("p_{}", c.lower())));
    h.push("review".to_string());
    h.push("review_reasons".to_string());
    h.push("unfamiliarity".to_string());
    h.extend(MORPHOMETRIC_COLUMNS.iter().map(|s| s.to_string()));
    h
}

/// The outline's measures, after `unfamiliarity`; the micrometre ones are empty unless the
/// photo's scale was given (`--um-per-px`).
pub const MORPHOMETRIC_COLUMNS: [&str; 8] = [
    "cell_area_px",
    "nucleus_area_px",
    "nc_ratio",
    "nucleus_lobes",
    "circularity",
    "cell_area_um2",
    "nucleus_area_um2",
    "cell_diameter_um",
];

fn morphometric_fields(c: &CellPrediction) -> Vec<String> {
    let m = &c.morphometrics;
    let mut f = vec![
        m.cell_area_px.to_string(),
        m.nucleus_area_px.to_string(),
        format!("{:.4}", m.nc_ratio),
        m.nucleus_lobes.to_string(),
        format!("{:.4}", m.circularity),
    ];
    match &c.morphometrics_um {
        Some(u) => f.extend([
            format!("{:.2}", u.cell_area_um2),
            format!("{:.2}", u.nucleus_area_um2),
            format!("{:.2}", u.cell_diameter_um),
        ]),
        None => f.extend(std::iter::repeat_n(String::new(), 3)),
    }
    f
}

/// The CSV described in the module documentation.
pub fn to_csv(results: &[PhotoResult], classes: &[ClassLabel]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut write = |row: Vec<String>| {
        // Writing into a Vec cannot fail.
        w.write_record(&row).expect("CSV written into memory");
    };
    write(csv_header(classes));
    for r in results {
        let Ok(p) = &r.outcome else { continue };
        let unfamiliarity = p
            .unfamiliarity
            .map(|u| format!("{u:.3}"))
            .unwrap_or_default();
        if p.cells.is_empty() {
            let mut row = vec![r.file.clone(), "0".to_string()];
            row.extend(std::iter::repeat_n(String::new(), 4));
            row.push(NO_CELL_CLASS.to_string());
            row.extend(std::iter::repeat_n(String::new(), 1 + classes.len()));
            row.push(p.review.to_string());
            row.push(reasons_list(&p.review_reasons));
            row.push(unfamiliarity.clone());
            row.extend(std::iter::repeat_n(
                String::new(),
                MORPHOMETRIC_COLUMNS.len(),
            ));
            write(row);
        }
        for c in &p.cells {
            let b = &c.bbox;
            let mut row = vec![
                r.file.clone(),
                c.cell.to_string(),
                b.x_min.to_string(),
                b.y_min.to_string(),
                b.x_max.to_string(),
                b.y_max.to_string(),
                c.class.as_str().to_string(),
                format!("{:.4}", c.confidence),
            ];
            row.extend(c.probabilities.iter().map(|p| format!("{p:.4}")));
            row.push(c.review.to_string());
            row.push(reasons_list(&c.review_reasons));
            row.push(unfamiliarity.clone());
            row.extend(morphometric_fields(c));
            write(row);
        }
    }
    // A CSV writer over a Vec has no I/O to fail, and every field is valid UTF-8.
    let bytes = w.into_inner().expect("CSV written into memory");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields")
}

/// A JSON array with one [`PhotoRecord`] per photo (the wire format of [`crate::wire`]).
pub fn to_json(results: &[PhotoResult], classes: &[ClassLabel]) -> String {
    let photos: Vec<PhotoRecord> = results
        .iter()
        .map(|r| PhotoRecord::new(&r.file, &r.outcome, classes, false))
        .collect();
    // Plain data (strings, numbers, maps with string keys): serialising cannot fail.
    serde_json::to_string_pretty(&photos).expect("predictions serialise to JSON") + "\n"
}

/// Reasons as the CSV writes them: separated by `;`.
fn reasons_list(reasons: &[ReviewReason]) -> String {
    reasons
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

fn reasons_text(reasons: &[ReviewReason]) -> String {
    reasons
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An aligned table for people: one line per leukocyte (with the review
/// reasons), one per photo without one or unreadable, and a summary line.
pub fn to_table(results: &[PhotoResult]) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "file".into(),
        "cell".into(),
        "box (x_min,y_min)-(x_max,y_max)".into(),
        "class".into(),
        "confidence".into(),
        "review".into(),
    ]];
    for r in results {
        match &r.outcome {
            Err(e) => rows.push([
                r.file.clone(),
                "-".into(),
                String::new(),
                "unreadable".into(),
                String::new(),
                e.clone(),
            ]),
            Ok(p) if p.cells.is_empty() => rows.push([
                r.file.clone(),
                "0".into(),
                String::new(),
                NO_CELL_CLASS.into(),
                String::new(),
                reasons_text(&p.review_reasons),
            ]),
            Ok(p) => {
                for c in &p.cells {
                    let b = &c.bbox;
                    rows.push([
                        r.file.clone(),
                        c.cell.to_string(),
                        format!("({},{})-({},{})", b.x_min, b.y_min, b.x_max, b.y_max),
                        c.class.as_str().into(),
                        format!("{:.3}", c.confidence),
                        if c.review {
                            reasons_text(&c.review_reasons)
                        } else {
                            "-".into()
                        },
                    ]);
                }
            }
        }
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let _ = match i {
                1 | 4 => write!(line, "{cell:>w$}  "),
                5 => write!(line, "{cell}"),
                _ => write!(line, "{cell:<w$}  "),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let s = Summary::of(results);
    let _ = writeln!(
        out,
        "\n{}: {} ({} flagged for review), {} without a leukocyte, {} unlike the training photos, {} unreadable",
        count(s.photos, "photo", "photos"),
        count(s.cells, "leukocyte", "leukocytes"),
        s.flagged,
        s.without_cell,
        s.unfamiliar,
        s.unreadable
    );
    out
}

/// Counts over a set of photo results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub photos: usize,
    pub cells: usize,
    pub flagged: usize,
    pub without_cell: usize,
    /// Photos unlike the model's training photos.
    pub unfamiliar: usize,
    pub unreadable: usize,
}

impl Summary {
    pub fn of(results: &[PhotoResult]) -> Summary {
        let mut s = Summary {
            photos: results.len(),
            ..Summary::default()
        };
        for r in results {
            match &r.outcome {
                Err(_) => s.unreadable += 1,
                Ok(p) => {
                    s.unfamiliar += usize::from(p.unfamiliar());
                    s.without_cell += usize::from(p.cells.is_empty());
                    s.cells += p.cells.len();
                    s.flagged += p.cells.iter().filter(|c| c.review).count();
                }
            }
        }
        s
    }
}

/// What the HTML report says besides the predictions.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub title: String,
    /// Where the model came from, e.g. "embedded default model".
    pub model_origin: String,
    /// e.g. "experiment final, epoch 9".
    pub model_description: String,
    /// The model's classes, in probability order.
    pub classes: Vec<ClassLabel>,
    pub rules: ReviewRules,
    /// Crops shown per type in the gallery; the rest are counted.
    pub gallery_cap: usize,
}

/// `n` with the singular or plural noun: "1 photo", "3 photos".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A PNG `data:` URI of an image (empty when it cannot be encoded).
pub fn png_data_uri(img: &image::RgbImage) -> String {
    match crate::wire::png_base64(img) {
        Some(b64) => format!("data:image/png;base64,{b64}"),
        None => String::new(),
    }
}

/// A PNG `data:` URI of an image shrunk to at most `side` pixels square (at
/// the size it is shown: keeps a report of hundreds of cells small).
fn thumbnail_uri(img: &image::RgbImage, side: u32) -> String {
    if img.width() > side || img.height() > side {
        let small = image::imageops::resize(img, side, side, image::imageops::FilterType::Triangle);
        png_data_uri(&small)
    } else {
        png_data_uri(img)
    }
}

/// A cell's crop at `side` pixels with its outline drawn over it, as inline SVG: the crop is
/// placed on the photo window it shows, so the outline's photo-pixel polygons fall on the cell
/// (cell in yellow, nucleus in blue; both colour-blind safe against stained cells).
fn outlined_thumbnail(c: &CellPrediction, side: u32, class: &str) -> String {
    let w = &c.crop_window;
    let img = thumbnail_uri(&c.crop, side);
    if w.width <= 0 || w.height <= 0 {
        return format!("<img class=\"{class}\" src=\"{img}\" alt=\"\">");
    }
    let outline = c.mask.outline();
    // A stroke of about 1.5 thumbnail pixels, in photo pixels.
    let stroke = 1.5 * w.width.max(w.height) as f64 / side as f64;
    let path = |polys: &[Vec<[u32; 2]>]| {
        let mut d = String::new();
        for p in polys {
            for (i, [x, y]) in p.iter().enumerate() {
                let _ = write!(d, "{}{x} {y}", if i == 0 { "M" } else { "L" });
            }
            d.push('Z');
        }
        d
    };
    format!(
        "<svg class=\"{class}\" width=\"{side}\" height=\"{side}\" viewBox=\"{} {} {} {}\" \
         preserveAspectRatio=\"none\" role=\"img\" aria-label=\"cell {} with its outline\">\
         <image href=\"{img}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
         preserveAspectRatio=\"none\"/>\
         <path d=\"{}\" fill=\"none\" stroke=\"#f0e442\" stroke-width=\"{stroke:.2}\"/>\
         <path d=\"{}\" fill=\"none\" stroke=\"#56b4e9\" stroke-width=\"{stroke:.2}\"/></svg>",
        w.x,
        w.y,
        w.width,
        w.height,
        c.cell,
        w.x,
        w.y,
        w.width,
        w.height,
        path(&outline.cell),
        path(&outline.nucleus),
    )
}

/// A horizontal bar chart of the percentages, as inline SVG.
fn bar_chart_svg(counts: &[TypeCount]) -> String {
    let (label_w, bar_w, row_h) = (110.0, 360.0, 28.0);
    let height = row_h * counts.len() as f64 + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"differential count\">\n",
        w = label_w + bar_w + 70.0
    );
    for (i, t) in counts.iter().enumerate() {
        let y = 5.0 + row_h * i as f64;
        let w = bar_w * t.percent / 100.0;
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"14\">{name}</text>\
             <rect x=\"{bx}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{fill}\"/>\
             <text x=\"{vx:.1}\" y=\"{ty}\" font-size=\"13\">{p:.1}%</text>",
            x = label_w - 8.0,
            ty = y + row_h * 0.62,
            name = t.class.display_name(),
            bx = label_w,
            h = row_h - 8.0,
            fill = t.class.colour(),
            vx = label_w + w + 6.0,
            p = t.percent,
        );
    }
    s.push_str("</svg>");
    s
}

/// Sides of the crops as shown in the review list and the gallery.
const REVIEW_THUMB_PX: u32 = 64;
const GALLERY_THUMB_PX: u32 = 96;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px}\
th{background:#f2f2f2;text-align:left}td.n{text-align:right}tr.total td{font-weight:bold}\
.note{color:#555;font-size:0.92em}.warning{background:#fff3cd;border:1px solid #e0b000;padding:0.6em 0.9em;border-radius:4px}.gallery{display:flex;flex-wrap:wrap;gap:6px}\
figure{margin:0;text-align:center;font-size:0.75em;width:100px;overflow-wrap:anywhere}\
figure .thumb{width:96px;height:96px;display:block;margin:auto}.flag{outline:3px solid #d55e00}\
td .thumb{width:64px;height:64px}td.b{white-space:nowrap}";

/// The self-contained HTML differential-count report: counts and
/// percentages per type in the clinical order with a bar chart, the cells
/// flagged for review with their reasons, a gallery of crops per type,
/// photos without a leukocyte and unreadable files. No external resources;
/// images are PNG data URIs. File names are HTML-escaped.
pub fn render_html(results: &[PhotoResult], opts: &ReportOptions) -> String {
    let e = html_escape;
    let differential = differential_of(results, &opts.classes);
    let counts = differential.counts;
    let summary = Summary::of(results);
    let total = summary.cells;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = e(&opts.title)
    );
    let _ = writeln!(
        h,
        "<p>{}, {} read; <b>{}</b> classified, {} flagged for review; \
         {} without a leukocyte; {} unlike the model's training photos; {} unreadable.</p>\n\
         <p class=\"note\">Model: {} ({}).</p>",
        count(summary.photos, "photo", "photos"),
        summary.photos - summary.unreadable,
        count(total, "leukocyte", "leukocytes"),
        summary.flagged,
        summary.without_cell,
        summary.unfamiliar,
        summary.unreadable,
        e(&opts.model_origin),
        e(&opts.model_description),
    );
    if let Some(w) = &differential.warning {
        let _ = writeln!(h, "<p class=\"warning\" id=\"unfamiliar\">{}</p>", e(w));
    }

    // Counts table and chart.
    h.push_str("<h2>Differential count</h2>\n<table id=\"counts\">\n");
    h.push_str(
        "<tr><th>type</th><th>count</th><th>percent</th><th>of which flagged for review</th></tr>\n",
    );
    for t in &counts {
        let _ = writeln!(
            h,
            "<tr><td>{}{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}%</td><td class=\"n\">{}</td></tr>",
            t.class.display_name(),
            if t.in_model { "" } else { " *" },
            t.count,
            t.percent,
            t.flagged
        );
    }
    let _ = writeln!(
        h,
        "<tr class=\"total\"><td>total</td><td class=\"n\">{total}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n</table>",
        if total > 0 { "100.0%" } else { "-" },
        summary.flagged
    );
    let missing: Vec<String> = counts
        .iter()
        .filter(|t| !t.in_model)
        .map(|t| t.class.display_name())
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note\">* This model has no {} class: such cells cannot be recognised, \
             are shown as 0 and would be counted as another type.</p>",
            missing.join(" or ").to_lowercase()
        );
    }
    if total > 0 && total < 100 {
        let _ = writeln!(
            h,
            "<p class=\"note\">Fewer than 100 leukocytes: the percentages are imprecise \
             (a manual differential counts at least 100 cells).</p>"
        );
    }
    h.push_str(&bar_chart_svg(&counts));
    h.push('\n');

    // Cells flagged for review.
    let flagged: Vec<(&PhotoResult, &CellPrediction)> = results
        .iter()
        .flat_map(|r| r.cells().iter().map(move |c| (r, c)))
        .filter(|(_, c)| c.review)
        .collect();
    let _ = writeln!(h, "<h2>Flagged for review ({})</h2>", flagged.len());
    let r = &opts.rules;
    let _ = writeln!(
        h,
        "<p class=\"note\">A cell is flagged when its top probability is below {:.2} \
         (low_confidence), the photo's edge cuts off more than {:.0}% of its diameter \
         (cut_by_border), or the box's geometric-mean side is outside {:.2}-{:.2} of the \
         photo's shorter side (unusual_size: a fragment, a clump or another magnification), or \
         its photo looks unlike the photos the model was trained on (unfamiliar_photo: another \
         microscope, camera or stain). Flagged cells are counted above under their predicted \
         type.</p>",
        r.min_confidence,
        100.0 * r.max_cut_share,
        r.min_side_fraction,
        r.max_side_fraction
    );
    if !flagged.is_empty() {
        h.push_str(
            "<table id=\"review\">\n<tr><th>crop</th><th>file</th><th>cell</th><th>box</th>\
             <th>predicted</th><th>confidence</th><th>reasons</th></tr>\n",
        );
        for (r, c) in &flagged {
            let b = &c.bbox;
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"b\">({},{})-({},{})</td><td>{}</td><td class=\"n\">{:.3}</td><td>{}</td></tr>",
                outlined_thumbnail(c, REVIEW_THUMB_PX, "thumb"),
                e(&r.file),
                c.cell,
                b.x_min,
                b.y_min,
                b.x_max,
                b.y_max,
                c.class.display_name(),
                c.confidence,
                reasons_text(&c.review_reasons)
            );
        }
        h.push_str("</table>\n");
    }

    // Gallery.
    h.push_str("<h2>Cells by type</h2>\n");
    for t in counts.iter().filter(|t| t.count > 0) {
        let _ = writeln!(
            h,
            "<h3>{} ({})</h3>\n<div class=\"gallery\">",
            t.class.display_name(),
            t.count
        );
        let cells = results
            .iter()
            .flat_map(|r| r.cells().iter().map(move |c| (r, c)))
            .filter(|(_, c)| c.class == t.class);
        for (r, c) in cells.take(opts.gallery_cap) {
            let short = r.file.rsplit(['/', '\\']).next().unwrap_or(&r.file);
            let _ = writeln!(
                h,
                "<figure title=\"{} cell {}\">{}{} #{} {:.2}</figure>",
                e(&r.file),
                c.cell,
                outlined_thumbnail(
                    c,
                    GALLERY_THUMB_PX,
                    if c.review { "thumb flag" } else { "thumb" }
                ),
                e(short),
                c.cell,
                c.confidence
            );
        }
        h.push_str("</div>\n");
        if t.count > opts.gallery_cap {
            let _ = writeln!(h, "<p>and {} more</p>", t.count - opts.gallery_cap);
        }
    }
    if total > 0 {
        h.push_str(
            "<p class=\"note\">Each crop shows the cell's outline in yellow and its nucleus in \
             blue; crops framed in orange are flagged for review.</p>\n",
        );
    }

    // Photos without a leukocyte and unreadable files.
    let _ = writeln!(
        h,
        "<h2>Photos without a leukocyte ({})</h2>",
        summary.without_cell
    );
    if summary.without_cell > 0 {
        h.push_str("<ul id=\"no-leukocyte\">\n");
        for r in results {
            if matches!(&r.outcome, Ok(p) if p.cells.is_empty()) {
                let _ = writeln!(h, "<li>{}</li>", e(&r.file));
            }
        }
        h.push_str("</ul>\n");
    }
    let _ = writeln!(h, "<h2>Unreadable files ({})</h2>", summary.unreadable);
    if summary.unreadable > 0 {
        h.push_str("<ul id=\"unreadable\">\n");
        for r in results {
            if let Err(why) = &r.outcome {
                let _ = writeln!(h, "<li>{}: {}</li>", e(&r.file), e(why));
            }
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::LeukocyteBox;
    use crate::predict::PhotoPrediction;

    fn cell(n: usize, class: ClassLabel, conf: f32, review: bool) -> CellPrediction {
        let mut probabilities = vec![(1.0 - conf) / 3.0; 4];
        let k = [
            ClassLabel::Neutrophil,
            ClassLabel::Eosinophil,
            ClassLabel::Lymphocyte,
            ClassLabel::Monocyte,
        ]
        .iter()
        .position(|&c| c == class)
        .unwrap();
        probabilities[k] = conf;
        // A 100x100 cell with a 50x50 nucleus in its middle.
        let mut mask = crate::isolate::CellMask::empty(10, 20, 100, 100);
        for (i, v) in mask.pixels.iter_mut().enumerate() {
            let (x, y) = (i % 100, i / 100);
            *v = if (25..75).contains(&x) && (25..75).contains(&y) {
                crate::isolate::NUCLEUS
            } else {
                crate::isolate::CYTOPLASM
            };
        }
        let bbox = LeukocyteBox {
            x_min: 10,
            y_min: 20,
            x_max: 110,
            y_max: 120,
            area_px: 2500,
        };
        CellPrediction {
            cell: n,
            bbox,
            crop_box: bbox,
            crop_window: crate::isolate::CropWindow {
                x: bbox.x_min as i64,
                y: bbox.y_min as i64,
                width: (bbox.x_max - bbox.x_min) as i64,
                height: (bbox.y_max - bbox.y_min) as i64,
            },
            morphometrics: mask.morphometrics(),
            morphometrics_um: (n == 2).then(|| mask.morphometrics().in_um(0.1)),
            mask,
            class,
            confidence: conf,
            probabilities,
            review,
            review_reasons: if review {
                vec![ReviewReason::LowConfidence]
            } else {
                vec![]
            },
            crop: image::RgbImage::from_pixel(8, 8, image::Rgb([120, 80, 200])),
        }
    }

    fn four() -> Vec<ClassLabel> {
        vec![
            ClassLabel::Neutrophil,
            ClassLabel::Eosinophil,
            ClassLabel::Lymphocyte,
            ClassLabel::Monocyte,
        ]
    }

    fn sample() -> Vec<PhotoResult> {
        let ok = |file: &str, cells| PhotoResult {
            file: file.into(),
            outcome: Ok({
                let cells: Vec<CellPrediction> = cells;
                let review_reasons = if cells.is_empty() {
                    vec![ReviewReason::NoLeukocyteFound]
                } else {
                    Vec::new()
                };
                PhotoPrediction {
                    width: 640,
                    height: 480,
                    cells,
                    unfamiliarity: None,
                    review: !review_reasons.is_empty(),
                    review_reasons,
                }
            }),
        };
        vec![
            ok(
                "a,<b>.jpg",
                vec![
                    cell(1, ClassLabel::Neutrophil, 0.9, false),
                    cell(2, ClassLabel::Lymphocyte, 0.5, true),
                ],
            ),
            ok("empty.png", vec![]),
            ok("c.jpg", vec![cell(1, ClassLabel::Neutrophil, 0.95, false)]),
            PhotoResult {
                file: "bad & broken.jpg".into(),
                outcome: Err("truncated JPEG".into()),
            },
        ]
    }

    #[test]
    fn csv_rows_and_none_row() {
        let csv = to_csv(&sample(), &four());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "file,cell,x_min,y_min,x_max,y_max,class,confidence,p_neutrophil,p_eosinophil,p_lymphocyte,p_monocyte,review,review_reasons,unfamiliarity,cell_area_px,nucleus_area_px,nc_ratio,nucleus_lobes,circularity,cell_area_um2,nucleus_area_um2,cell_diameter_um"
        );
        assert_eq!(lines.len(), 1 + 2 + 1 + 1, "{csv}");
        assert!(lines[1].starts_with("\"a,<b>.jpg\",1,10,20,110,120,NEUTROPHIL,0.9000,0.9000,"));
        // A square's circularity is capped at a disc's 1.
        assert!(
            lines[1].ends_with(",false,,,10000,2500,0.2500,1,1.0000,,,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2]
                .ends_with(",true,low_confidence,,10000,2500,0.2500,1,1.0000,100.00,25.00,11.28"),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[3],
            "empty.png,0,,,,,none,,,,,,true,no_leukocyte_found,,,,,,,,,"
        );
        assert!(!csv.contains("broken"));
    }

    #[test]
    fn json_has_errors_and_reasons() {
        let v: serde_json::Value = serde_json::from_str(&to_json(&sample(), &four())).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0]["cells"][1]["review_reasons"][0], "low_confidence");
        assert_eq!(a[0]["cells"][1]["class"], "LYMPHOCYTE");
        assert!(
            (a[0]["cells"][0]["probabilities"]["NEUTROPHIL"]
                .as_f64()
                .unwrap()
                - 0.9)
                .abs()
                < 1e-6
        );
        assert!(a[1]["error"].is_null());
        assert_eq!(a[3]["error"], "truncated JPEG");
    }

    #[test]
    fn table_lists_everything() {
        let t = to_table(&sample());
        assert!(t.contains("low_confidence"));
        assert!(t.contains("none"));
        assert!(t.contains("unreadable"));
        assert!(t.contains(
            "4 photos: 3 leukocytes (1 flagged for review), 1 without a leukocyte, 0 unlike the training photos, 1 unreadable"
        ));
    }

    #[test]
    fn differential_in_clinical_order() {
        let diff = differential_of(&sample(), &four());
        assert_eq!(
            (diff.photos, diff.cells, diff.flagged_for_review),
            (3, 3, 1)
        );
        assert_eq!(diff.photos_without_leukocyte, 1);
        let d = diff.counts;
        let order: Vec<ClassLabel> = d.iter().map(|t| t.class).collect();
        assert_eq!(order, ClassLabel::CLINICAL_ORDER);
        assert_eq!(d[0].count, 2);
        assert!((d[0].percent - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!((d[1].count, d[1].flagged), (1, 1));
        assert!(!d[4].in_model && d[4].count == 0);
    }

    #[test]
    fn html_is_escaped_and_self_contained() {
        let opts = ReportOptions {
            title: "Sample <1>".into(),
            model_origin: "embedded default model".into(),
            model_description: "test".into(),
            classes: four(),
            rules: ReviewRules {
                min_confidence: 0.7,
                border_px: 2,
                max_cut_share: 0.5,
                min_side_fraction: 0.15,
                max_side_fraction: 0.7,
            },
            gallery_cap: 1,
        };
        let h = render_html(&sample(), &opts);
        assert!(h.contains("Sample &lt;1&gt;"));
        assert!(h.contains("a,&lt;b&gt;.jpg"));
        assert!(!h.contains("<b>.jpg"));
        assert!(h.contains("bad &amp; broken.jpg: truncated JPEG"));
        assert!(h.contains("data:image/png;base64,"));
        assert!(h.contains("and 1 more"));
        assert!(h.contains("no basophil class"));
        assert!(
            !h.contains("http://")
                || !h
                    .replace("http://www.w3.org/2000/svg", "")
                    .contains("http://")
        );
        assert!(!h.contains("https://"));
        let pos: Vec<usize> = [
            "Neutrophil",
            "Lymphocyte",
            "Monocyte",
            "Eosinophil",
            "Basophil",
        ]
        .iter()
        .map(|n| h.find(&format!("<tr><td>{n}")).unwrap())
        .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
    }
}
