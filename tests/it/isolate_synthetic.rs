//! Leukocyte isolation on smears drawn in the test (known answers) and
//! properties that must hold for any input.

use image::{GrayImage, Luma, Rgb, RgbImage};
use leuko::isolate::{
    crop, isolate, isolate_with_mask, open, CropConfig, IsolationConfig, LeukocyteBox,
};
use proptest::prelude::*;

const BACKGROUND: [u8; 3] = [203, 204, 203];
const ERYTHROCYTE: [u8; 3] = [190, 150, 160];
const NUCLEUS: [u8; 3] = [146, 100, 215];
const CYTOPLASM: [u8; 3] = [196, 188, 214];

/// A leukocyte drawn as a lilac disk (cytoplasm) with a purple nucleus.
#[derive(Debug, Clone, Copy)]
struct Cell {
    cx: i64,
    cy: i64,
    radius: i64,
    nucleus_radius: i64,
}

impl Cell {
    /// Its bounding box, exclusive max.
    fn bbox(&self) -> [i64; 4] {
        [
            self.cx - self.radius,
            self.cy - self.radius,
            self.cx + self.radius + 1,
            self.cy + self.radius + 1,
        ]
    }
}

/// A 640x480 smear: gray background, a grid of reddish disks (erythrocytes)
/// that the cells are painted over.
fn smear(cells: &[Cell]) -> RgbImage {
    RgbImage::from_fn(640, 480, |x, y| {
        let (x, y) = (x as i64, y as i64);
        for c in cells {
            let d2 = (x - c.cx).pow(2) + (y - c.cy).pow(2);
            if d2 <= c.nucleus_radius.pow(2) {
                return Rgb(NUCLEUS);
            }
            if d2 <= c.radius.pow(2) {
                return Rgb(CYTOPLASM);
            }
        }
        let (gx, gy) = (x.rem_euclid(90) - 45, y.rem_euclid(90) - 45);
        if gx * gx + gy * gy < 36 * 36 {
            return Rgb(ERYTHROCYTE);
        }
        Rgb(BACKGROUND)
    })
}

/// The default config without the outline margin, so that a found box can
/// be compared with the drawn cell directly.
fn no_margin() -> IsolationConfig {
    IsolationConfig {
        box_margin_fraction: 0.0,
        ..IsolationConfig::default()
    }
}

fn assert_near(found: &LeukocyteBox, cell: &Cell, tolerance: i64) {
    let want = cell.bbox();
    let got = [
        found.x_min as i64,
        found.y_min as i64,
        found.x_max as i64,
        found.y_max as i64,
    ];
    for k in 0..4 {
        assert!(
            (got[k] - want[k]).abs() <= tolerance,
            "found {got:?}, drawn cell {want:?} (side {k} off by {})",
            got[k] - want[k]
        );
    }
}

#[test]
fn one_cell_is_found_within_3_px() {
    let cell = Cell {
        cx: 300,
        cy: 220,
        radius: 70,
        nucleus_radius: 40,
    };
    let boxes = isolate(&smear(&[cell]), &no_margin());
    assert_eq!(boxes.len(), 1, "{boxes:?}");
    assert_near(&boxes[0], &cell, 3);
}

#[test]
fn two_cells_give_two_boxes_largest_first() {
    let small = Cell {
        cx: 130,
        cy: 120,
        radius: 55,
        nucleus_radius: 30,
    };
    let large = Cell {
        cx: 470,
        cy: 330,
        radius: 75,
        nucleus_radius: 45,
    };
    let boxes = isolate(&smear(&[small, large]), &no_margin());
    assert_eq!(boxes.len(), 2, "{boxes:?}");
    assert_near(&boxes[0], &large, 3);
    assert_near(&boxes[1], &small, 3);
    assert!(boxes[0].area_px > boxes[1].area_px);
}

#[test]
fn margin_pushes_the_box_out() {
    let cell = Cell {
        cx: 320,
        cy: 240,
        radius: 60,
        nucleus_radius: 35,
    };
    let img = smear(&[cell]);
    let plain = isolate(&img, &no_margin())[0];
    let wide = isolate(&img, &IsolationConfig::default())[0];
    let m = IsolationConfig::default().box_margin_fraction;
    let expect = (m * plain.width() as f64).round() as i64;
    assert!(((plain.x_min as i64 - wide.x_min as i64) - expect).abs() <= 1);
    assert!(wide.x_max > plain.x_max && wide.y_min < plain.y_min && wide.y_max > plain.y_max);
}

#[test]
fn a_lobed_nucleus_is_one_leukocyte() {
    // Three separate nucleus lobes inside one cytoplasm disk.
    let cell = Cell {
        cx: 320,
        cy: 240,
        radius: 80,
        nucleus_radius: 0,
    };
    let lobes = [(285, 220), (335, 205), (345, 265)];
    let mut img = smear(&[cell]);
    for (x, y, p) in img.enumerate_pixels_mut() {
        for (lx, ly) in lobes {
            if (x as i64 - lx).pow(2) + (y as i64 - ly).pow(2) <= 22 * 22 {
                *p = Rgb(NUCLEUS);
            }
        }
    }
    let boxes = isolate(&img, &no_margin());
    assert_eq!(
        boxes.len(),
        1,
        "lobes must come back as one cell: {boxes:?}"
    );
    assert_near(&boxes[0], &cell, 3);
}

#[test]
fn small_purple_specks_are_not_leukocytes() {
    // Platelet-sized purple dots on a smear without leukocytes.
    let mut img = smear(&[]);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (gx, gy) = (
            (x as i64).rem_euclid(120) - 60,
            (y as i64).rem_euclid(120) - 60,
        );
        if gx * gx + gy * gy <= 5 * 5 {
            *p = Rgb(NUCLEUS);
        }
    }
    assert!(isolate(&img, &IsolationConfig::default()).is_empty());
}

#[test]
fn the_mask_covers_the_cell() {
    let cell = Cell {
        cx: 200,
        cy: 300,
        radius: 60,
        nucleus_radius: 30,
    };
    let iso = isolate_with_mask(&smear(&[cell]), &IsolationConfig::default());
    let f = iso.scale as i64;
    let inside = iso
        .mask
        .get_pixel((cell.cx / f) as u32, (cell.cy / f) as u32)
        .0[0];
    let outside = iso.mask.get_pixel(10, 10).0[0];
    assert_eq!((inside, outside), (255, 0));
}

/// Random smears: a few cells of random size and place, possibly cut by the
/// border, on a photo of random size.
fn arb_photo() -> impl Strategy<Value = RgbImage> {
    (
        1u32..400,
        1u32..300,
        proptest::collection::vec((0i64..400, 0i64..300, 3i64..60), 0..4),
    )
        .prop_map(|(w, h, cells)| {
            RgbImage::from_fn(w, h, |x, y| {
                for &(cx, cy, r) in &cells {
                    let d2 = (x as i64 - cx).pow(2) + (y as i64 - cy).pow(2);
                    if d2 <= (r / 2).pow(2) {
                        return Rgb(NUCLEUS);
                    }
                    if d2 <= r * r {
                        return Rgb(CYTOPLASM);
                    }
                }
                if (x / 17 + y / 23) % 3 == 0 {
                    Rgb(ERYTHROCYTE)
                } else {
                    Rgb(BACKGROUND)
                }
            })
        })
}

fn arb_mask() -> impl Strategy<Value = GrayImage> {
    (1u32..40, 1u32..40, any::<u64>(), 1u64..4).prop_map(|(w, h, seed, density)| {
        let mut state = seed | 1;
        GrayImage::from_fn(w, h, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Luma([if state % 4 < density { 255 } else { 0 }])
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn boxes_lie_inside_the_photo_and_are_sorted(photo in arb_photo()) {
        let boxes = isolate(&photo, &IsolationConfig::default());
        for b in &boxes {
            prop_assert!(b.x_min < b.x_max && b.x_max <= photo.width(), "{b:?}");
            prop_assert!(b.y_min < b.y_max && b.y_max <= photo.height(), "{b:?}");
            prop_assert!(b.area_px <= b.box_area_px());
        }
        for pair in boxes.windows(2) {
            prop_assert!(pair[0].area_px >= pair[1].area_px);
        }
    }

    #[test]
    fn opening_never_adds_foreground(mask in arb_mask(), radius in 0u32..6) {
        let opened = open(&mask, radius);
        prop_assert_eq!(opened.dimensions(), mask.dimensions());
        for (o, m) in opened.pixels().zip(mask.pixels()) {
            prop_assert!(o.0[0] == 0 || m.0[0] != 0);
        }
    }

    #[test]
    fn crops_are_always_the_configured_square(
        photo in arb_photo(),
        x0 in 0u32..500, y0 in 0u32..400, w in 0u32..500, h in 0u32..400,
        margin in 0.0f64..1.0, keep_aspect in any::<bool>(),
    ) {
        let b = LeukocyteBox { x_min: x0, y_min: y0, x_max: x0 + w, y_max: y0 + h, area_px: 0 };
        let cfg = CropConfig { margin_fraction: margin, keep_aspect, ..CropConfig::default() };
        prop_assert_eq!(crop(&photo, &b, &cfg).dimensions(), (128, 128));
        prop_assert_eq!(crop(&photo, &b, &CropConfig::with_size(37)).dimensions(), (37, 37));
    }
}
