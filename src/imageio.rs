//! Decoding photos safely: format sniffed from the bytes, dimensions and memory
//! limited before decoding (a header that claims 30000x30000 is refused, not
//! allocated), every colour layout converted to 8-bit RGB.

use crate::error::{LeukoError, Result};
use image::{ImageReader, Limits, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Largest width or height accepted; microscope photos are far below this.
pub const MAX_SIDE_PX: u32 = 10_000;
/// Largest decoder allocation accepted.
pub const MAX_ALLOC_BYTES: u64 = 512 * 1024 * 1024;

/// Extensions treated as photos when walking folders.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff"];

/// True when the path has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Largest photo file read, in MiB, unless `LEUKO_MAX_FILE_MB` says otherwise: a
/// 10,000 x 10,000 photo is at most 300 MB even uncompressed.
pub const DEFAULT_MAX_FILE_MB: u64 = 512;

/// The file-size cap in bytes (`LEUKO_MAX_FILE_MB`, else [`DEFAULT_MAX_FILE_MB`]).
pub fn max_file_bytes() -> u64 {
    std::env::var("LEUKO_MAX_FILE_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&mb| mb > 0)
        .unwrap_or(DEFAULT_MAX_FILE_MB)
        .saturating_mul(1 << 20)
}

/// Reads a photo file's bytes: only a regular file (not a pipe, device or socket, which could
/// block or never end), and only up to [`max_file_bytes`], checked before reading.
pub fn read_photo_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let refuse = |message: String| LeukoError::Image {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| LeukoError::io(path, e))?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a folder, pipe, device or socket)".to_string(),
        ));
    }
    let cap = max_file_bytes();
    if meta.len() > cap {
        return Err(refuse(format!(
            "file of {} MiB, larger than the limit of {} MiB (LEUKO_MAX_FILE_MB)",
            meta.len() >> 20,
            cap >> 20
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| LeukoError::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read still stops at the cap.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LeukoError::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(refuse(format!(
            "file larger than the limit of {} MiB (LEUKO_MAX_FILE_MB)",
            cap >> 20
        )));
    }
    Ok(bytes)
}

/// Reads and decodes an image file into 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = read_photo_file(path)?;
    decode_rgb(&bytes).map_err(|message| LeukoError::Image {
        path: path.to_path_buf(),
        message,
    })
}

/// Decodes bytes into 8-bit RGB; the error says what is wrong in words.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty".to_string());
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image in a known format (JPEG, PNG, BMP, TIFF)".to_string());
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !has_jpeg_end_marker(bytes) {
        // The decoder would fill a cut-off file with gray and call it a photo.
        return Err("truncated JPEG (no end-of-image marker)".to_string());
    }
    let jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    if jpeg {
        // Sized from the header against the file's length: a JPEG needs some bits for every
        // 8x8 block, so 23 KB cannot hold a 9000 x 9000 photo, whatever its header says.
        let dims = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .into_dimensions();
        if let Ok((w, h)) = dims {
            let least = u64::from(w) * u64::from(h) / MIN_JPEG_PIXELS_PER_BYTE;
            if (bytes.len() as u64) < least {
                return Err(format!(
                    "truncated or corrupt JPEG: {} bytes cannot hold the {w}x{h} pixels its \
                     header claims",
                    bytes.len()
                ));
            }
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE_PX);
    limits.max_image_height = Some(MAX_SIDE_PX);
    limits.max_alloc = Some(MAX_ALLOC_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => format!(
            "image too large (limit {MAX_SIDE_PX}x{MAX_SIDE_PX} pixels, {} MiB): {e}",
            MAX_ALLOC_BYTES >> 20
        ),
        other => other.to_string(),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err("the image has no pixels".to_string());
    }
    let rgb = img.into_rgb8();
    if jpeg && filled_in_rows(&rgb) * 4 >= rgb.height() && rgb.height() >= 32 {
        // A JPEG cut short with an end marker appended decodes without an error: the
        // decoder repeats its last block over the missing ones.
        return Err(
            "truncated JPEG: the image data stops early (the lower part is filled in)".to_string(),
        );
    }
    Ok(rgb)
}

/// Bytes a JPEG needs at least, as pixels per byte: an 8x8 block of one colour takes a few bits
/// per channel; this leaves a margin of about 5x below that.
const MIN_JPEG_PIXELS_PER_BYTE: u64 = 1000;

/// Rows at the bottom of `img` that repeat one 8-pixel block across the whole width, as a
/// decoder's fill of missing JPEG data does (a real photo's row never repeats exactly).
fn filled_in_rows(img: &RgbImage) -> u32 {
    let w = img.width() as usize;
    if w < 16 {
        return 0;
    }
    let raw = img.as_raw();
    let mut n = 0;
    for y in (0..img.height() as usize).rev() {
        let row = &raw[y * w * 3..(y + 1) * w * 3];
        if row[24..].iter().zip(row).all(|(a, b)| a == b) {
            n += 1;
        } else {
            break;
        }
    }
    n
}

/// A complete JPEG ends with the EOI marker (FF D9), possibly followed by padding.
/// Inside entropy-coded data 0xFF is always stuffed (FF 00), so FF D9 near the end
/// is the marker, not data.
fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_text_and_oversized_inputs() {
        assert!(decode_rgb(b"").unwrap_err().contains("empty"));
        assert!(decode_rgb(b"hello, not an image")
            .unwrap_err()
            .contains("not an image"));
        // A PNG header (IHDR) claiming 30000x30000 with no pixel data.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        let crc = crc32(&ihdr);
        png.extend_from_slice(&crc.to_be_bytes());
        let err = decode_rgb(&png).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn refuses_a_truncated_jpeg() {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]));
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode_rgb(&buf).is_ok());
        let err = decode_rgb(&buf[..buf.len() / 2]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn converts_gray_and_rgba_to_rgb() {
        let gray = image::GrayImage::from_pixel(3, 2, image::Luma([7]));
        let mut buf = Vec::new();
        gray.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        let rgb = decode_rgb(&buf).unwrap();
        assert_eq!(rgb.get_pixel(2, 1).0, [7, 7, 7]);
    }
}
