//! Binary morphology with octagonal ("approximately round") structuring
//! elements, built from separable passes that the compiler vectorises.
//!
//! The octagon of radius `r` is the Minkowski sum of a square of half-width
//! `a = round(r (sqrt 2 - 1))` and a diamond of radius `b = r - a`: its extent
//! is `r` along the axes and about `r` along the diagonals, like a disk.
//! Eroding (dilating) by it is eroding (dilating) by the square (a 3-wide
//! minimum across the rows, then down the columns, `a` times) and then by the
//! diamond (a 3x3 cross, `b` times). Opening is erosion then dilation by the
//! same octagon, so it can never add a pixel.
//!
//! Masks are `GrayImage`s with 0 = out and non-zero = in; results use 255.

use super::masks::IN;
use image::GrayImage;

/// The square half-width and diamond radius of the octagon of radius `r`.
pub fn octagon(radius: u32) -> (u32, u32) {
    let a = (radius as f64 * (std::f64::consts::SQRT_2 - 1.0)).round() as u32;
    (a, radius - a)
}

/// How a pass combines a pixel with its neighbours.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Minimum; outside the image counts as foreground (255).
    Erode,
    /// Maximum; outside the image counts as background (0).
    Dilate,
}

impl Op {
    #[inline(always)]
    fn f(self, a: u8, b: u8) -> u8 {
        match self {
            Op::Erode => a.min(b),
            Op::Dilate => a.max(b),
        }
    }
}

/// `dst[x] = op(src[x-1], src[x], src[x+1])` along one row.
fn row3(op: Op, src: &[u8], dst: &mut [u8]) {
    let w = src.len().min(dst.len());
    if w == 0 {
        return;
    }
    if w == 1 {
        dst[0] = src[0];
        return;
    }
    dst[0] = op.f(src[0], src[1]);
    dst[w - 1] = op.f(src[w - 2], src[w - 1]);
    let n = w - 2;
    let (l, m, r, d) = (
        &src[..n],
        &src[1..n + 1],
        &src[2..n + 2],
        &mut dst[1..n + 1],
    );
    match op {
        Op::Erode => {
            for i in 0..n {
                d[i] = l[i].min(m[i]).min(r[i]);
            }
        }
        Op::Dilate => {
            for i in 0..n {
                d[i] = l[i].max(m[i]).max(r[i]);
            }
        }
    }
}

/// `dst[x] = op(src[x-a..=x+a])` along one row (outside ignored).
fn row_wide(op: Op, src: &[u8], dst: &mut [u8], a: usize) {
    let w = src.len().min(dst.len());
    dst[..w].copy_from_slice(&src[..w]);
    for d in 1..=a.min(w.saturating_sub(1)) {
        // Shifted by d to each side.
        combine_into(op, &mut dst[d..w], &src[..w - d]);
        combine_into(op, &mut dst[..w - d], &src[d..w]);
    }
}

/// `dst = op(dst, src)` elementwise.
fn combine_into(op: Op, dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let (d, s) = (&mut dst[..n], &src[..n]);
    match op {
        Op::Erode => {
            for i in 0..n {
                d[i] = d[i].min(s[i]);
            }
        }
        Op::Dilate => {
            for i in 0..n {
                d[i] = d[i].max(s[i]);
            }
        }
    }
}

/// One pass of a 3-wide structuring element: across rows (`horizontal`),
/// down columns (`vertical`), or both at once, which is the 3x3 cross (a
/// pixel and its 4 neighbours).
fn pass(op: Op, src: &[u8], dst: &mut [u8], w: usize, h: usize, horizontal: bool, vertical: bool) {
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let out = &mut dst[y * w..(y + 1) * w];
        if horizontal {
            row3(op, row, out);
        } else {
            out.copy_from_slice(row);
        }
        if vertical {
            if y > 0 {
                combine_into(op, out, &src[(y - 1) * w..y * w]);
            }
            if y + 1 < h {
                combine_into(op, out, &src[(y + 1) * w..(y + 2) * w]);
            }
        }
    }
}

fn apply(mask: &GrayImage, op: Op, radius: u32) -> GrayImage {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    // Normalise to 0/255 so min/max are boolean AND/OR.
    let mut a: Vec<u8> = mask
        .as_raw()
        .iter()
        .map(|&v| if v != 0 { IN } else { 0 })
        .collect();
    if radius == 0 || w == 0 || h == 0 {
        return GrayImage::from_raw(mask.width(), mask.height(), a).unwrap_or_else(|| mask.clone());
    }
    let (square, diamond) = octagon(radius.min(10_000));
    let mut b = vec![0u8; w * h];
    if square > 0 {
        // Separable square: rows, then columns, each (2a+1) wide.
        let s = square as usize;
        for y in 0..h {
            row_wide(op, &a[y * w..(y + 1) * w], &mut b[y * w..(y + 1) * w], s);
        }
        for y in 0..h {
            let out = &mut a[y * w..(y + 1) * w];
            out.copy_from_slice(&b[y * w..(y + 1) * w]);
            for yy in y.saturating_sub(s)..(y + s + 1).min(h) {
                if yy != y {
                    combine_into(op, out, &b[yy * w..(yy + 1) * w]);
                }
            }
        }
    }
    for _ in 0..diamond {
        // Cross: horizontal and vertical neighbours of the same source.
        pass(op, &a, &mut b, w, h, true, true);
        std::mem::swap(&mut a, &mut b);
    }
    GrayImage::from_raw(mask.width(), mask.height(), a).unwrap_or_else(|| mask.clone())
}

/// Erosion by the octagon of radius `radius`: a pixel stays when the whole
/// octagon around it is foreground. Outside the image counts as foreground
/// (as in OpenCV), so a cell cut by the border keeps its edge there.
pub fn erode(mask: &GrayImage, radius: u32) -> GrayImage {
    apply(mask, Op::Erode, radius)
}

/// Dilation by the octagon of radius `radius`.
pub fn dilate(mask: &GrayImage, radius: u32) -> GrayImage {
    apply(mask, Op::Dilate, radius)
}

/// Opening (erosion, then dilation, same octagon): removes every part
/// thinner than the octagon (scraps, platelets, thin bridges) and rounds
/// corners; never adds a pixel.
pub fn open(mask: &GrayImage, radius: u32) -> GrayImage {
    dilate(&erode(mask, radius), radius)
}

/// Closing (dilation, then erosion): fills holes and gaps narrower than the
/// octagon; never removes a pixel.
pub fn close(mask: &GrayImage, radius: u32) -> GrayImage {
    erode(&dilate(mask, radius), radius)
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

    fn dot(n: usize) -> GrayImage {
        let rows: Vec<String> = (0..n)
            .map(|y| {
                (0..n)
                    .map(|x| if x == n / 2 && y == n / 2 { '#' } else { '.' })
                    .collect()
            })
            .collect();
        from_rows(&rows.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn small_radii_are_round() {
        // Radius 1 is a cross (as OpenCV's 3x3 ellipse), radius 2 a 5x5
        // square without corners, radius 3 an octagon.
        assert_eq!(
            to_rows(&dilate(&dot(5), 1)),
            [".....", "..#..", ".###.", "..#..", "....."]
        );
        assert_eq!(
            to_rows(&dilate(&dot(5), 2)),
            [".###.", "#####", "#####", "#####", ".###."]
        );
        assert_eq!(
            to_rows(&dilate(&dot(7), 3)),
            ["..###..", ".#####.", "#######", "#######", "#######", ".#####.", "..###.."]
        );
        assert_eq!(octagon(8), (3, 5));
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
        assert_eq!(o.get_pixel(1, 1).0[0], 0);
        assert_eq!(o.get_pixel(3, 4).0[0], IN);
        assert_eq!(o.get_pixel(9, 2).0[0], IN);
    }

    #[test]
    fn closing_fills_small_holes() {
        let m = from_rows(&["#####", "##.##", "#####"]);
        assert_eq!(to_rows(&close(&m, 1)), ["#####", "#####", "#####"]);
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
