//! Every threshold and size of the isolation, in one serialisable struct.
//!
//! Colour thresholds are percentages of a pixel's mean intensity *after*
//! white balance against the photo's own background and normalisation to a
//! common stain contrast (see [`super::colour::ColourModel`]), so they do not
//! depend on exposure, on the colour of a microscope's lamp or on how strongly
//! a smear was stained. Lengths are in *working* pixels: the photo is shrunk
//! (box average, integer factor) until its longer side is at most
//! [`IsolationConfig::work_max_side_px`], so a 640x480 BCCD photo is worked on
//! at 214x160 and one working pixel is 3x3 photo pixels; a photo of the same
//! field at another resolution gives the same working image. Areas are
//! shares of the image.
//!
//! The defaults were read off the BCCD photos: pixel histograms of the
//! background, erythrocytes, nuclei and cytoplasm, sizes of nuclei and
//! platelets, and the masks of a few dozen photos. The VOC annotations were
//! used only to score; each default sits in a flat stretch of the score
//! (changing it by a step either way moves the mean IoU by less than 0.01,
//! alike on even and odd photo ids), so nothing hangs on a lucky value.

use crate::error::{LeukoError, Result};
use serde::{Deserialize, Serialize};

/// Thresholds, kernel sizes and limits of [`super::isolate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationConfig {
    /// Masks are computed on a copy shrunk until its longer side is at most
    /// this many pixels; boxes are scaled back. 240 shrinks a 640x480 photo 3x
    /// (to 214x160): a leukocyte is still 50-80 px wide, and every later step
    /// costs a ninth.
    pub work_max_side_px: u32,

    /// The brightest this share of pixels (by R+G+B) is taken as the empty
    /// background of the smear; its per-channel median is the white reference
    /// every pixel is balanced against. 20% is background in every BCCD photo,
    /// and the glints inside erythrocytes are too few to move the median.
    pub background_top_fraction: f64,

    /// Every photo's colour features are multiplied by
    /// `stain_reference_chroma_pct / stain`, where `stain` is the photo's 90th
    /// percentile of balanced chroma: mostly erythrocytes, so it measures how
    /// strongly the photo is stained and how much contrast the camera kept.
    /// The thresholds below are then in units of a typical BCCD photo: 20% is
    /// the BCCD median (5-95%: 16-26%).
    pub stain_reference_chroma_pct: u16,

    /// Smallest factor of that normalisation (very vivid photos).
    pub min_contrast_gain: f64,

    /// Largest factor (very pale photos): beyond it pixel noise would be
    /// amplified into the cytoplasm mask.
    pub max_contrast_gain: f64,

    /// Background mask: balanced chroma `(max-min)/mean` at most this
    /// percentage is gray. The background's own pixel noise spreads 2-4%;
    /// stained cells are above 8%.
    pub background_max_chroma_pct: u16,

    /// Erythrocyte mask: stained pixels whose blue exceeds red by at most this
    /// percentage of the mean, `(B-R)/mean <= t` ("weak blue or strong red");
    /// the leukocyte mask is the stained pixels above it. Erythrocytes sit at
    /// -20..-5%, background at 0, pale cytoplasm at 4..16%, stained nuclei at
    /// 25..80% (median per photo 29..69%); the histogram of all pixels has
    /// its valley between 16 and 24%.
    pub erythrocyte_max_blueness_pct: u16,

    /// Radius of the (octagonal) opening of the leukocyte mask: removes
    /// scraps narrower than ~5 working px (15 photo px: platelets, stained
    /// edges) and rounds the shapes, while nucleus lobes (10-15 working px
    /// thick) stay.
    pub open_radius_px: u32,

    /// Pieces of the opened leukocyte mask smaller than this share of the
    /// working image do not seed a cell: 0.3% is ~100 working px, a disk of
    /// 11 px. In BCCD the smallest largest nucleus piece of a photo has 570
    /// working px, and half of all other pieces (platelets) are under 50.
    pub seed_min_area_fraction: f64,

    /// Cytoplasm features are averaged over a (2r+1)^2 window first: pale
    /// cytoplasm differs from the background by little more than the pixel
    /// noise, and eosinophil granules alternate with gaps.
    pub cytoplasm_smooth_radius_px: u32,

    /// Cytoplasm ("not red"): averaged `(B-R)/mean` at least this percentage,
    /// i.e. bluer than the gray background by twice its noise. Neutrophil,
    /// lymphocyte and monocyte cytoplasm is lilac to blue (4-16%);
    /// erythrocytes are below 0.
    pub cytoplasm_min_blueness_pct: i16,

    /// Cytoplasm ("strongly stained"): averaged magenta `((R+B)/2-G)/mean` at
    /// least this percentage. Eosinophil granules are orange-red like
    /// erythrocytes but stain far more strongly: erythrocytes have a median
    /// magenta of 5-10% per photo, granule fields 15-30%.
    pub granule_min_magenta_pct: i16,

    /// A nucleus grows into its cytoplasm at most this far (8-connected
    /// steps). A leukocyte is up to twice as wide as its nucleus; 20 working
    /// px (60 photo px) covers the widest cytoplasm rims in BCCD.
    pub grow_max_px: u32,

    /// Pores of the grown cells (gaps between granules, noise) are filled by
    /// a closing of this radius.
    pub fill_radius_px: u32,

    /// Parts of the grown cells thinner than an octagon of this radius
    /// (~11 working px, a sixth of a cell) are removed by an opening: the
    /// growth leaks along stained erythrocyte rims and debris in thin paths.
    /// Nuclei always stay.
    pub trim_radius_px: u32,

    /// Boxes of two pieces closer than this share of the smaller box's longer
    /// side are merged: lobes of one nucleus that the growth did not join.
    pub merge_gap_fraction: f64,

    /// Leukocytes whose nucleus area is below this share of the photo are
    /// dropped: 0.5% (1536 px of 640x480) is about half the nucleus of the
    /// smallest lymphocytes and twice a large platelet.
    pub min_area_fraction: f64,

    /// The mask's outline lies about this many working pixels inside the
    /// cell's edge: shrinking and averaging blur the edge over a few pixels
    /// and the cytoplasm thresholds cut the blur above half-way. Each side of
    /// a box is pushed out by it (one working pixel, the averaging radius; a
    /// drawn test cell is then found within 2 px).
    pub edge_px: u32,

    /// Each side of a box is then pushed out by this share of its size:
    /// annotators draw a box that encloses the cell with a little room, and
    /// the faint rim of a cell's membrane is not in the mask.
    pub box_margin_fraction: f64,

    /// The second look, taken only when the colour cues above find no leukocyte: nuclei are
    /// then the darkest stained pixels. Some stains (rapid stains, under a yellowish lamp)
    /// colour nuclei reddish-purple rather than blue, so the blueness test misses them, while
    /// the nucleus is still by far the darkest thing in the field: it passes 45-55% less light
    /// than the background, cytoplasm 20-35%, erythrocytes of such smears under 15%. A pixel
    /// is nucleus when its darkness (percent less light than the white-balanced background)
    /// is at least this and above the photo's own split between dark and light stained pixels
    /// (Otsu's threshold). 0 switches the second look off.
    pub dark_nucleus_min_pct: u16,

    /// In the second look, cytoplasm is also what is at least this much darker than the
    /// background (averaged like the colour cues): the pale rim around a dark nucleus.
    pub dark_cytoplasm_min_pct: u16,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            work_max_side_px: 240,
            background_top_fraction: 0.2,
            stain_reference_chroma_pct: 20,
            min_contrast_gain: 0.5,
            max_contrast_gain: 2.5,
            background_max_chroma_pct: 6,
            erythrocyte_max_blueness_pct: 20,
            open_radius_px: 2,
            seed_min_area_fraction: 0.003,
            cytoplasm_smooth_radius_px: 1,
            cytoplasm_min_blueness_pct: 5,
            granule_min_magenta_pct: 16,
            grow_max_px: 20,
            fill_radius_px: 2,
            trim_radius_px: 5,
            merge_gap_fraction: 0.1,
            min_area_fraction: 0.005,
            edge_px: 1,
            box_margin_fraction: 0.03,
            dark_nucleus_min_pct: 30,
            dark_cytoplasm_min_pct: 15,
        }
    }
}

impl IsolationConfig {
    /// The settings for the same scene in a photo resized by `scale`: the working resolution's
    /// bound follows the resize (so the shrink factor, and with it the size of a cell in working
    /// pixels, stay those of the original photo) and the minimum areas, shares of the photo,
    /// follow the photo's area. Radii are in working pixels and need no change.
    pub fn at_scale(&self, scale: f64) -> IsolationConfig {
        let s = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        IsolationConfig {
            work_max_side_px: ((self.work_max_side_px as f64 * s).round() as u32).max(1),
            seed_min_area_fraction: self.seed_min_area_fraction / (s * s),
            min_area_fraction: self.min_area_fraction / (s * s),
            ..self.clone()
        }
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LeukoError::Config(m));
        if self.work_max_side_px < 16 {
            return bad(format!(
                "work_max_side_px = {} (at least 16)",
                self.work_max_side_px
            ));
        }
        let fractions = [
            (
                "background_top_fraction",
                self.background_top_fraction,
                0.0,
                1.0,
            ),
            (
                "seed_min_area_fraction",
                self.seed_min_area_fraction,
                0.0,
                1.0,
            ),
            ("merge_gap_fraction", self.merge_gap_fraction, 0.0, 10.0),
            ("min_area_fraction", self.min_area_fraction, 0.0, 1.0),
            ("box_margin_fraction", self.box_margin_fraction, 0.0, 10.0),
            ("min_contrast_gain", self.min_contrast_gain, 0.1, 1.0),
            ("max_contrast_gain", self.max_contrast_gain, 1.0, 10.0),
        ];
        for (name, v, lo, hi) in fractions {
            if !(v.is_finite() && v >= lo && v <= hi) {
                return bad(format!("{name} = {v} (must be in {lo}..={hi})"));
            }
        }
        if self.background_top_fraction <= 0.0 {
            return bad("background_top_fraction must be above 0".to_string());
        }
        for (name, v) in [
            ("open_radius_px", self.open_radius_px),
            (
                "cytoplasm_smooth_radius_px",
                self.cytoplasm_smooth_radius_px,
            ),
            ("grow_max_px", self.grow_max_px),
            ("fill_radius_px", self.fill_radius_px),
            ("trim_radius_px", self.trim_radius_px),
            ("edge_px", self.edge_px),
        ] {
            if v > 1000 {
                return bad(format!("{name} = {v} (at most 1000)"));
            }
        }
        for (name, v) in [
            ("background_max_chroma_pct", self.background_max_chroma_pct),
            (
                "stain_reference_chroma_pct",
                self.stain_reference_chroma_pct,
            ),
            (
                "erythrocyte_max_blueness_pct",
                self.erythrocyte_max_blueness_pct,
            ),
        ] {
            if v > 300 {
                return bad(format!("{name} = {v} (at most 300)"));
            }
        }
        for (name, v) in [
            ("dark_nucleus_min_pct", self.dark_nucleus_min_pct),
            ("dark_cytoplasm_min_pct", self.dark_cytoplasm_min_pct),
        ] {
            if v > 100 {
                return bad(format!("{name} = {v} (at most 100)"));
            }
        }
        for (name, v) in [
            (
                "cytoplasm_min_blueness_pct",
                self.cytoplasm_min_blueness_pct,
            ),
            ("granule_min_magenta_pct", self.granule_min_magenta_pct),
        ] {
            if !(-300..=300).contains(&v) {
                return bad(format!("{name} = {v} (must be in -300..=300)"));
            }
        }
        Ok(())
    }

    /// Parses a TOML file's text (fields left out keep their defaults).
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        let cfg: IsolationConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// The config as TOML, every field written.
    pub fn to_toml(&self) -> crate::Result<String> {
        toml::to_string(self).map_err(|e| {
            crate::LeukoError::Config(format!("cannot write the isolation settings as TOML: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let cfg = IsolationConfig::default();
        cfg.validate().unwrap();
        let back = IsolationConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn at_scale_keeps_the_working_cell_size() {
        let cfg = IsolationConfig::default();
        // A photo halved: the working bound halves (so a 320-px photo shrinks 3x, as its 640-px
        // original), the minimum shares of the (4x smaller) area quadruple, radii stay.
        let half = cfg.at_scale(0.5);
        assert_eq!(half.work_max_side_px, 120);
        assert_eq!(
            crate::isolate::work_factor(320, 240, half.work_max_side_px),
            crate::isolate::work_factor(640, 480, cfg.work_max_side_px)
        );
        assert!((half.min_area_fraction - 4.0 * cfg.min_area_fraction).abs() < 1e-12);
        assert!((half.seed_min_area_fraction - 4.0 * cfg.seed_min_area_fraction).abs() < 1e-12);
        assert_eq!(half.open_radius_px, cfg.open_radius_px);
        assert_eq!(cfg.at_scale(1.0), cfg);
    }

    #[test]
    fn partial_toml_keeps_defaults_and_bad_values_are_named() {
        let cfg = IsolationConfig::from_toml("grow_max_px = 7").unwrap();
        assert_eq!(cfg.grow_max_px, 7);
        assert_eq!(
            cfg.open_radius_px,
            IsolationConfig::default().open_radius_px
        );
        let err = IsolationConfig::from_toml("min_area_fraction = 2.0").unwrap_err();
        assert!(err.contains("min_area_fraction"), "{err}");
        let err = IsolationConfig::from_toml("no_such_field = 1").unwrap_err();
        assert!(err.contains("no_such_field"), "{err}");
    }
}
