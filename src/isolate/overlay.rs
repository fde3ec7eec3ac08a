//! A picture to check the isolation by eye: the photo with the outline of the
//! leukocyte mask (yellow) and the boxes (largest green, others cyan).

use super::Isolation;
use image::{Rgb, RgbImage};

const OUTLINE: Rgb<u8> = Rgb([255, 230, 0]);
const LARGEST: Rgb<u8> = Rgb([0, 200, 0]);
const OTHER: Rgb<u8> = Rgb([0, 200, 255]);

/// The photo with the mask outline and the boxes drawn on it.
pub fn overlay(photo: &RgbImage, iso: &Isolation) -> RgbImage {
    let mut out = photo.clone();
    let (w, h) = out.dimensions();
    let mask = &iso.mask;
    let (mw, mh) = mask.dimensions();
    let f = iso.scale.max(1);
    let on = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < mw as i64
            && y < mh as i64
            && mask.get_pixel(x as u32, y as u32).0[0] != 0
    };
    for my in 0..mh as i64 {
        for mx in 0..mw as i64 {
            let edge = on(mx, my)
                && (!on(mx - 1, my) || !on(mx + 1, my) || !on(mx, my - 1) || !on(mx, my + 1));
            if !edge {
                continue;
            }
            for y in (my as u32 * f)..((my as u32 + 1) * f).min(h) {
                for x in (mx as u32 * f)..((mx as u32 + 1) * f).min(w) {
                    out.put_pixel(x, y, OUTLINE);
                }
            }
        }
    }
    for (k, b) in iso.boxes.iter().enumerate().rev() {
        let colour = if k == 0 { LARGEST } else { OTHER };
        draw_rect(&mut out, b.x_min, b.y_min, b.x_max, b.y_max, 2, colour);
    }
    out
}

/// A hollow rectangle `thickness` pixels wide just inside `[x0, x1) x [y0, y1)`.
fn draw_rect(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, thickness: u32, c: Rgb<u8>) {
    let (w, h) = img.dimensions();
    let (x1, y1) = (x1.min(w), y1.min(h));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    for y in y0..y1 {
        for x in x0..x1 {
            let border = x < x0 + thickness
                || x + thickness >= x1
                || y < y0 + thickness
                || y + thickness >= y1;
            if border {
                img.put_pixel(x, y, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::LeukocyteBox;
    use super::*;
    use image::GrayImage;

    #[test]
    fn draws_boxes_and_outline_inside_the_photo() {
        let photo = RgbImage::from_pixel(20, 10, Rgb([10, 10, 10]));
        let mut mask = GrayImage::new(10, 5);
        for y in 1..4 {
            for x in 1..4 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        let iso = Isolation {
            boxes: vec![LeukocyteBox {
                x_min: 12,
                y_min: 2,
                x_max: 30,
                y_max: 9,
                area_px: 5,
            }],
            mask,
            scale: 2,
            background: [200, 200, 200],
            cells: Vec::new(),
        };
        let o = overlay(&photo, &iso);
        assert_eq!(o.dimensions(), (20, 10));
        assert_eq!(*o.get_pixel(2, 2), OUTLINE);
        assert_eq!(*o.get_pixel(4, 4), Rgb([10, 10, 10])); // inside the mask
        assert_eq!(*o.get_pixel(12, 5), LARGEST);
        assert_eq!(*o.get_pixel(19, 5), LARGEST); // clipped right edge
        assert_eq!(*o.get_pixel(15, 5), Rgb([10, 10, 10]));
    }
}
