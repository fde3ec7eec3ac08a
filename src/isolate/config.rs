//! Every threshold and size of the isolation, in one serialisable struct.
//!
//! Colour thresholds are percentages of a pixel's mean intensity *after* white
//! balance against the photo's own background (see [`super::colour`]), so they
//! do not depend on exposure or on the colour cast of a microscope's lamp.
//! Lengths and areas are in *working* pixels: the photo is shrunk (box average)
//! until its longer side is at most [`IsolationConfig::work_max_side_px`], so a
//! 640x480 BCCD photo is worked on at 320x240 and one working pixel is 2x2
//! photo pixels. Areas are fractions of the whole photo so they keep their
//! meaning at other resolutions.
//!
//! The defaults were read off the BCCD photos (pixel histograms of background,
//! erythrocytes, nuclei and cytoplasm, and a look at the masks of a few dozen
//! photos); the annotations were only used afterwards to score them.

use crate::error::{LeukoError, Result};
use serde::{Deserialize, Serialize};

/// Thresholds, kernel sizes and limits of [`super::isolate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationConfig {
    /// Masks are computed on a copy shrunk (box average, integer factor) until
    /// its longer side is at most this many pixels; boxes are scaled back.
    /// 320 halves a 640x480 photo: a leukocyte is still ~100 px wide, and every
    /// later step costs a quarter.
    pub work_max_side_px: u32,

    /// The brightest this share of pixels (by R+G+B) is taken as the empty
    /// background of the smear, and its per-channel median is the white
    /// reference that every pixel is balanced against. Smears are mostly empty
    /// glass and erythrocytes; 20% is background in every BCCD photo, while
    /// specular glints inside erythrocytes stay well under 20% so the median
    /// ignores them.
    pub background_top_fraction: f32,

    /// Every photo's colour features are multiplied by
    /// `stain_reference_chroma_pct / stain`, where `stain` is the photo's 90th
    /// percentile of balanced chroma (mostly erythrocytes, so it measures how
    /// strongly the photo is stained and how much contrast the camera kept).
    /// The thresholds below are then in units of a typical BCCD photo:
    /// 20% is the BCCD median (5-95% range 17-26%).
    pub stain_reference_chroma_pct: u16,

    /// Smallest factor of that normalisation (for very vivid photos).
    pub min_contrast_gain: f32,

    /// Largest factor (for very pale photos): beyond it the pixel noise
    /// would be amplified into the cytoplasm mask.
    pub max_contrast_gain: f32,

    /// Background mask: balanced chroma `(max-min)/mean` at most this
    /// percentage is gray. The background's own pixel noise has a spread of
    /// 2-4%; stained cells are above 8%.
    pub background_max_chroma_pct: u16,

    /// Erythrocyte mask: stained pixels whose blue exceeds red by at most this
    /// percentage of the mean, `(B-R)/mean <= t` ("weak blue or strong red");
    /// the leukocyte mask is the pixels above it.
    /// Erythrocytes sit at -20..-5%, background at 0, pale cytoplasm at
    /// 4..16%, stained nuclei at 25..80% (median per photo 29..69%); the
    /// histogram of all pixels has its valley between 16 and 24%.
    pub erythrocyte_max_blueness_pct: u16,

    /// Radius of the (octagonal) opening of the leukocyte mask. Removes
    /// scraps thinner than ~2r+1 working pixels (platelets are 4-6 px across
    /// at 320 px width, nucleus lobes 10-15 px) and rounds the shapes.
    pub open_radius_px: u32,

    /// Pieces of the opened leukocyte mask smaller than this share of the
    /// working image do not seed a cell (platelet clumps survive the opening
    /// but are small): 0.2% = 150 working px = a disk of ~14 px diameter.
    pub seed_min_area_fraction: f32,

    /// Cytoplasm features are averaged over a (2r+1)^2 window first: pale
    /// cytoplasm differs from the background by about the pixel noise, and
    /// eosinophil granules alternate with gaps.
    pub cytoplasm_smooth_radius_px: u32,

    /// Cytoplasm ("not red"): averaged `(B-R)/mean` at least this percentage,
    /// i.e. bluer than the gray background (neutrophil, lymphocyte and
    /// monocyte cytoplasm is lilac to blue; erythrocytes are below 0).
    pub cytoplasm_min_blueness_pct: i16,

    /// Cytoplasm ("strongly stained"): averaged magenta `((R+B)/2-G)/mean` at
    /// least this percentage. Eosinophil granules are orange-red like
    /// erythrocytes but stain far more strongly: erythrocytes have a median
    /// magenta of 5-10% per photo, granule fields 15-30%.
    pub granule_min_magenta_pct: i16,

    /// The nucleus grows into the cytoplasm at most this far (8-connected
    /// steps). A leukocyte is ~2x the width of its nucleus; at 320 px width
    /// the cytoplasm rim is up to ~20 px wide.
    pub grow_max_px: u32,

    /// Pores of the grown cells are filled by a closing of this radius.
    pub fill_radius_px: u32,

    /// Parts of the grown cells thinner than an octagon of this radius
    /// (leaks along debris) are removed by an opening; nuclei stay.
    pub trim_radius_px: u32,

    /// Boxes of two pieces closer than this share of the smaller box's longer
    /// side are merged (lobes of one nucleus that the growth did not join).
    pub merge_gap_fraction: f32,

    /// Leukocytes whose nucleus area is below this share of the photo are
    /// dropped: 0.5% of 640x480 is 1536 px, half the nucleus of the smallest
    /// lymphocytes in BCCD and about twice a large platelet.
    pub min_area_fraction: f32,

    /// The mask's outline lies about this many working pixels inside the
    /// cell's edge: shrinking and averaging blur the edge over a few pixels
    /// and the cytoplasm thresholds cut the blur above half-way. Each side of
    /// a box is pushed out by it (one working pixel: the averaging radius).
    pub edge_px: u32,

    /// Each side of a found box is pushed out by this share of the box's
    /// size: the mask stops where the cell's blurred edge crosses the
    /// thresholds, a few pixels inside the cell's outline, while a box that
    /// encloses the cell includes the outline.
    pub box_margin_fraction: f32,
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
        }
    }
}

impl IsolationConfig {
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
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let cfg = IsolationConfig::default();
        cfg.validate().unwrap();
        let back = IsolationConfig::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
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
