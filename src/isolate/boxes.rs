//! Boxes: merging the pieces of one leukocyte, scaling from working to photo
//! pixels, the outline margin, and the public [`LeukocyteBox`].

use serde::{Deserialize, Serialize};

/// A found leukocyte in photo pixels. `x_max`/`y_max` are exclusive, so the
/// box is `x_max - x_min` pixels wide; it always lies inside the photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeukocyteBox {
    pub x_min: u32,
    pub y_min: u32,
    pub x_max: u32,
    pub y_max: u32,
    /// Pixels of the leukocyte (nucleus) mask in this cell, in photo pixels
    /// (counted on the working mask and scaled by the shrink factor squared).
    /// Boxes are ordered by it, largest first.
    pub area_px: u64,
}

impl LeukocyteBox {
    pub fn width(&self) -> u32 {
        self.x_max.saturating_sub(self.x_min)
    }

    pub fn height(&self) -> u32 {
        self.y_max.saturating_sub(self.y_min)
    }

    /// The box in a photo of `width x height` pixels that is the same scene resized by
    /// `fx` horizontally and `fy` vertically (edges rounded outwards, clipped to the photo).
    pub fn resized(&self, fx: f64, fy: f64, width: u32, height: u32) -> LeukocyteBox {
        let lo = |v: u32, f: f64, max: u32| ((v as f64 * f).floor().max(0.0) as u32).min(max);
        let hi = |v: u32, f: f64, max: u32| ((v as f64 * f).ceil().max(0.0) as u32).min(max);
        let b = LeukocyteBox {
            x_min: lo(self.x_min, fx, width),
            y_min: lo(self.y_min, fy, height),
            x_max: hi(self.x_max, fx, width),
            y_max: hi(self.y_max, fy, height),
            area_px: 0,
        };
        LeukocyteBox {
            area_px: ((self.area_px as f64 * fx * fy).round() as u64).min(b.box_area_px()),
            ..b
        }
    }

    /// Pixels covered by the box (not the mask).
    pub fn box_area_px(&self) -> u64 {
        self.width() as u64 * self.height() as u64
    }

    /// Intersection over union of two boxes (0 when either is empty).
    pub fn iou(&self, other: &LeukocyteBox) -> f64 {
        let iw = self
            .x_max
            .min(other.x_max)
            .saturating_sub(self.x_min.max(other.x_min));
        let ih = self
            .y_max
            .min(other.y_max)
            .saturating_sub(self.y_min.max(other.y_min));
        let inter = iw as u64 * ih as u64;
        let union = self.box_area_px() + other.box_area_px() - inter;
        if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        }
    }
}

/// A cell candidate in working pixels (exclusive max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub x_min: u32,
    pub y_min: u32,
    pub x_max: u32,
    pub y_max: u32,
    pub nucleus_area_px: u32,
}

impl Piece {
    fn longer_side(&self) -> u32 {
        (self.x_max - self.x_min).max(self.y_max - self.y_min)
    }

    /// Chessboard gap between two boxes (0 when they touch or overlap).
    fn gap(&self, o: &Piece) -> u32 {
        let gx = self
            .x_min
            .max(o.x_min)
            .saturating_sub(self.x_max.min(o.x_max));
        let gy = self
            .y_min
            .max(o.y_min)
            .saturating_sub(self.y_max.min(o.y_max));
        gx.max(gy)
    }

    fn join(&self, o: &Piece) -> Piece {
        Piece {
            x_min: self.x_min.min(o.x_min),
            y_min: self.y_min.min(o.y_min),
            x_max: self.x_max.max(o.x_max),
            y_max: self.y_max.max(o.y_max),
            nucleus_area_px: self.nucleus_area_px + o.nucleus_area_px,
        }
    }
}

/// Joins pieces whose boxes overlap, touch, or lie closer than
/// `gap_fraction` of the smaller piece's longer side, until no two do.
/// Returns the merged pieces and, for each input piece, the index of the
/// merged piece it went into.
pub fn merge_close(pieces: &[Piece], gap_fraction: f64) -> (Vec<Piece>, Vec<usize>) {
    let frac = if gap_fraction.is_finite() {
        gap_fraction.max(0.0)
    } else {
        0.0
    };
    let mut merged: Vec<Option<Piece>> = pieces.iter().copied().map(Some).collect();
    let mut owner: Vec<usize> = (0..pieces.len()).collect();
    loop {
        let mut joined = false;
        for a in 0..merged.len() {
            for b in a + 1..merged.len() {
                let (Some(pa), Some(pb)) = (merged[a], merged[b]) else {
                    continue;
                };
                let limit = frac * pa.longer_side().min(pb.longer_side()) as f64;
                if pa.gap(&pb) as f64 <= limit {
                    merged[a] = Some(pa.join(&pb));
                    merged[b] = None;
                    owner.iter_mut().filter(|o| **o == b).for_each(|o| *o = a);
                    joined = true;
                }
            }
        }
        if !joined {
            break;
        }
    }
    let mut index = vec![usize::MAX; merged.len()];
    let mut out = Vec::new();
    for (i, p) in merged.iter().enumerate() {
        if let Some(p) = p {
            index[i] = out.len();
            out.push(*p);
        }
    }
    let owner = owner.into_iter().map(|o| index[o]).collect();
    (out, owner)
}

/// Scales a working-pixel piece to photo pixels (`factor` per working
/// pixel), pushes each side out by `edge_px` working pixels and then by
/// `margin_fraction` of the box's size, and clips to the `width x height` photo.
pub fn to_photo(
    p: &Piece,
    factor: u32,
    width: u32,
    height: u32,
    edge_px: u32,
    margin_fraction: f64,
) -> LeukocyteBox {
    let f = factor.max(1) as i64;
    let e = edge_px.min(10_000) as i64 * f;
    let (x0, y0) = (p.x_min as i64 * f - e, p.y_min as i64 * f - e);
    let (x1, y1) = (p.x_max as i64 * f + e, p.y_max as i64 * f + e);
    let m = if margin_fraction.is_finite() {
        margin_fraction.max(0.0)
    } else {
        0.0
    };
    let clip_x = |v: i64| v.clamp(0, width as i64) as u32;
    let clip_y = |v: i64| v.clamp(0, height as i64) as u32;
    // The margin is a share of the visible part of the box.
    let mx = (m * (clip_x(x1) - clip_x(x0)) as f64).round() as i64;
    let my = (m * (clip_y(y1) - clip_y(y0)) as f64).round() as i64;
    let b = LeukocyteBox {
        x_min: clip_x(x0 - mx),
        y_min: clip_y(y0 - my),
        x_max: clip_x(x1 + mx),
        y_max: clip_y(y1 + my),
        area_px: 0,
    };
    let area = p.nucleus_area_px as u64 * (f * f) as u64;
    LeukocyteBox {
        area_px: area.min(b.box_area_px()),
        ..b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(x0: u32, y0: u32, x1: u32, y1: u32, a: u32) -> Piece {
        Piece {
            x_min: x0,
            y_min: y0,
            x_max: x1,
            y_max: y1,
            nucleus_area_px: a,
        }
    }

    #[test]
    fn resized_boxes_round_outwards_and_stay_in_the_photo() {
        let b = LeukocyteBox {
            x_min: 11,
            y_min: 20,
            x_max: 31,
            y_max: 40,
            area_px: 100,
        };
        // Half size: edges rounded outwards (5.5 → 5, 15.5 → 16), area by the factors' product.
        let half = b.resized(0.5, 0.5, 320, 240);
        assert_eq!(
            (half.x_min, half.y_min, half.x_max, half.y_max),
            (5, 10, 16, 20)
        );
        assert_eq!(half.area_px, 25);
        // Twice the size in a photo too small for it: clipped.
        let big = b.resized(2.0, 2.0, 50, 70);
        assert_eq!(
            (big.x_min, big.y_min, big.x_max, big.y_max),
            (22, 40, 50, 70)
        );
        assert!(big.area_px <= big.box_area_px());
    }

    #[test]
    fn close_pieces_merge_far_ones_do_not() {
        let pieces = [
            piece(0, 0, 20, 20, 100),
            piece(21, 0, 40, 20, 50),    // gap 1 <= 0.1 * 20
            piece(80, 80, 100, 100, 70), // far away
            piece(45, 0, 50, 5, 5),      // gap 5 from the joined box, > 0.1 * 5
        ];
        let (merged, owner) = merge_close(&pieces, 0.1);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0], piece(0, 0, 40, 20, 150));
        assert_eq!(owner, vec![0, 0, 1, 2]);
    }

    #[test]
    fn scaling_adds_margin_and_clips_to_the_photo() {
        let b = to_photo(&piece(10, 10, 60, 30, 300), 2, 110, 100, 0, 0.1);
        // 20..120 x 20..60 in photo pixels, clipped at x = 110 to 20..110,
        // then a margin of 10% of 90 x 40 = 9 x 4 (clipped again).
        assert_eq!((b.x_min, b.y_min, b.x_max, b.y_max), (11, 16, 110, 64));
        assert_eq!(b.area_px, 1200);
    }

    #[test]
    fn edge_is_added_before_the_margin() {
        let b = to_photo(&piece(10, 10, 20, 20, 10), 3, 640, 480, 1, 0.0);
        assert_eq!((b.x_min, b.y_min, b.x_max, b.y_max), (27, 27, 63, 63));
        let b = to_photo(&piece(0, 0, 20, 20, 10), 3, 640, 480, 1, 0.5);
        // 0..63 after the edge (clipped at 0), margin 32 on each side.
        assert_eq!((b.x_min, b.x_max), (0, 95));
    }

    #[test]
    fn iou_of_boxes() {
        let a = LeukocyteBox {
            x_min: 0,
            y_min: 0,
            x_max: 10,
            y_max: 10,
            area_px: 1,
        };
        let b = LeukocyteBox {
            x_min: 5,
            y_min: 0,
            x_max: 15,
            y_max: 10,
            area_px: 1,
        };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-12);
        assert_eq!(a.iou(&a), 1.0);
        let empty = LeukocyteBox {
            x_min: 3,
            y_min: 3,
            x_max: 3,
            y_max: 3,
            area_px: 0,
        };
        assert_eq!(empty.iou(&empty), 0.0);
    }
}
