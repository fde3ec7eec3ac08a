//! A seeded mutation fuzz of the photo readers: 500 damaged JPEG, PNG, BMP and TIFF files
//! (bytes flipped, runs overwritten, cut short, chunks repeated) through decode, isolation and
//! classification. None may panic or abort; each either is refused with a message or gives a
//! prediction whose probabilities are numbers.

use crate::common::{photo, JTSC};
use leuko::predict::Classifier;
use rand::{Rng, SeedableRng};
use std::io::Cursor;

fn encoded(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn five_hundred_mutated_photos_never_panic() {
    let c = Classifier::embedded().unwrap();
    let bccd = std::fs::read(photo(0)).unwrap();
    let small = leuko::imageio::load_rgb(&photo(5)).unwrap();
    let small = image::imageops::resize(&small, 160, 120, image::imageops::FilterType::Triangle);
    let seeds: Vec<Vec<u8>> = vec![
        bccd,
        std::fs::read(format!("{JTSC}/images/010.bmp")).unwrap(),
        encoded(&small, image::ImageFormat::Png),
        encoded(&small, image::ImageFormat::Tiff),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let (mut refused, mut classified) = (0, 0);
    for i in 0..500 {
        let mut b = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..=4) {
            let n = b.len().max(1);
            match rng.random_range(0..4) {
                0 => {
                    let at = rng.random_range(0..n);
                    b[at] ^= 1 << rng.random_range(0..8u32);
                }
                1 => {
                    let at = rng.random_range(0..n);
                    let len = rng.random_range(1..64).min(n - at);
                    let v: u8 = rng.random();
                    b[at..at + len].iter_mut().for_each(|x| *x = v);
                }
                2 => b.truncate(rng.random_range(0..n)),
                _ => {
                    let at = rng.random_range(0..n);
                    let len = rng.random_range(1..256).min(n - at);
                    let chunk = b[at..at + len].to_vec();
                    b.splice(at..at, chunk);
                }
            }
        }
        match c.classify_bytes(&format!("mutant {i}"), &b) {
            Ok(p) => {
                classified += 1;
                for cell in &p.cells {
                    assert!(cell.probabilities.iter().all(|p| p.is_finite()));
                }
            }
            Err(e) => {
                refused += 1;
                assert!(e.to_string().contains(&format!("mutant {i}")), "{e}");
            }
        }
    }
    assert_eq!(refused + classified, 500);
    assert!(
        refused > 0 && classified > 0,
        "{refused} refused, {classified} classified"
    );
}
