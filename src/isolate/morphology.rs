//! Binary morphology with octagonal ("approximately round") structuring
//! elements of any radius, in time independent of the radius.
//!
//! Each operation is a threshold of a 3-4 chamfer distance transform (two
//! raster passes): the pixels within chamfer distance `3r` of a point form an
//! octagon that approximates a disk of radius `r` within ~8%. Because the
//! chamfer distance is a metric on the pixel grid, erosion and dilation here
//! are exact erosion and dilation by that octagon, so the opening can never
//! add a pixel.

use super::masks::IN;
use image::GrayImage;

const ORTHO: u16 = 3;
const DIAG: u16 = 4;
const FAR: u16 = u16::MAX;

/// Chamfer (3-4) distance from every pixel to the nearest pixel for which
/// `is_source` holds; `FAR` when there is none. Distances saturate at `FAR`.
fn chamfer_distance(mask: &GrayImage, is_source: impl Fn(u8) -> bool) -> Vec<u16> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let mut d: Vec<u16> = mask
        .as_raw()
        .iter()
        .map(|&v| if is_source(v) { 0 } else { FAR })
        .collect();
    if w == 0 || h == 0 {
        return d;
    }
    // Forward pass: left, up-left, up, up-right.
    for y in 0..h {
        let row = y * w;
        for x in 0..w {
            let i = row + x;
            let mut best = d[i];
            if x > 0 {
                best = best.min(d[i - 1].saturating_add(ORTHO));
            }
            if y > 0 {
                let up = i - w;
                best = best.min(d[up].saturating_add(ORTHO));
                if x > 0 {
                    best = best.min(d[up - 1].saturating_add(DIAG));
                }
                if x + 1 < w {
                    best = best.min(d[up + 1].saturating_add(DIAG));
                }
            }
            d[i] = best;
        }
    }
    // Backward pass: right, down-right, down, down-left.
    for y in (0..h).rev() {
        let row = y * w;
        for x in (0..w).rev() {
            let i = row + x;
            let mut best = d[i];
            if x + 1 < w {
                best = best.min(d[i + 1].saturating_add(ORTHO));
            }
            if y + 1 < h {
                let down = i + w;
                best = best.min(d[down].saturating_add(ORTHO));
                if x + 1 < w {
                    best = best.min(d[down + 1].saturating_add(DIAG));
                }
                if x > 0 {
                    best = best.min(d[down - 1].saturating_add(DIAG));
                }
            }
            d[i] = best;
        }
    }
    d
}

fn threshold(mask: &GrayImage, d: &[u16], keep: impl Fn(u16) -> bool) -> GrayImage {
    let data = d.iter().map(|&v| if keep(v) { IN } else { 0 }).collect();
    GrayImage::from_raw(mask.width(), mask.height(), data)
        .unwrap_or_else(|| GrayImage::new(mask.width(), mask.height()))
}

fn reach(radius: u32) -> u16 {
    (radius.min(20_000) * ORTHO as u32) as u16
}

/// Erosion by an octagon of radius `radius`: a pixel stays when no
/// background pixel lies within it. Outside the image counts as foreground
/// (as in OpenCV), so a cell cut by the border keeps its edge there.
pub fn erode(mask: &GrayImage, radius: u32) -> GrayImage {
    if radius == 0 {
        return mask.clone();
    }
    let d = chamfer_distance(mask, |v| v == 0);
    let r = reach(radius);
    threshold(mask, &d, |v| v > r)
}

/// Dilation by an octagon of radius `radius`: a pixel is set when a
/// foreground pixel lies within it.
pub fn dilate(mask: &GrayImage, radius: u32) -> GrayImage {
    if radius == 0 {
        return mask.clone();
    }
    let d = chamfer_distance(mask, |v| v != 0);
    let r = reach(radius);
    threshold(mask, &d, |v| v <= r)
}

/// Opening (erosion, then dilation, same octagon): removes every part
/// thinner than the octagon (scraps, platelets, thin bridges) and rounds
/// corners; never adds a pixel.
pub fn open(mask: &GrayImage, radius: u32) -> GrayImage {
    dilate(&erode(mask, radius), radius)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    fn from_rows(rows: &[&str]) -> GrayImage {
        let h = rows.len() as u32;
        let w = rows[0].len() as u32;
        GrayImage::from_fn(w, h, |x, y| {
            Luma([if rows[y as usize].as_bytes()[x as usize] == b'#' {
                IN
            } else {
                0
            }])
        })
    }

    fn to_rows(m: &GrayImage) -> Vec<String> {
        (0..m.height())
            .map(|y| {
                (0..m.width())
                    .map(|x| {
                        if m.get_pixel(x, y).0[0] != 0 {
                            '#'
                        } else {
                            '.'
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn small_radii_match_euclidean_disks() {
        // Chamfer 3-4 with reach 3 includes only orthogonal neighbours at
        // distance 3; diagonal ones are at 4, so radius 1 is a cross (as
        // OpenCV's 3x3 ellipse).
        let m = from_rows(&[".....", ".....", "..#..", ".....", "....."]);
        assert_eq!(
            to_rows(&dilate(&m, 1)),
            [".....", "..#..", ".###.", "..#..", "....."]
        );
        // Radius 2 (reach 6): 3x3 square plus the orthogonal tips at distance 6.
        assert_eq!(
            to_rows(&dilate(&m, 2)),
            ["..#..", ".###.", "#####", ".###.", "..#.."]
        );
    }

    #[test]
    fn opening_removes_specks_and_keeps_blobs() {
        let m = from_rows(&[
            "............",
            ".#......###.",
            "........###.",
            "..####..###.",
            "..####......",
            "..####......",
            "..####......",
            "............",
        ]);
        let o = open(&m, 1);
        // The single speck is gone, the 4x4 block survives (corners rounded).
        assert_eq!(o.get_pixel(1, 1).0[0], 0);
        assert_eq!(o.get_pixel(3, 4).0[0], IN);
        assert_eq!(o.get_pixel(9, 2).0[0], IN);
    }

    #[test]
    fn erosion_does_not_eat_from_the_image_border() {
        let m = from_rows(&["###..", "###..", "###.."]);
        assert_eq!(to_rows(&erode(&m, 1)), ["##...", "##...", "##..."]);
    }

    #[test]
    fn radius_zero_and_empty_masks_are_identity() {
        let m = from_rows(&["#.", ".#"]);
        assert_eq!(open(&m, 0), m);
        let empty = GrayImage::new(0, 0);
        assert_eq!(open(&empty, 3).dimensions(), (0, 0));
        let blank = GrayImage::new(4, 3);
        assert_eq!(open(&blank, 2), blank);
    }
}
