//! Single-thread timing of decode + isolate + outlines + crop per photo over the whole
//! data set, as the OpenCV reference (`isolate.py score`) measures itself.
//! Run by `bench/isolate_vs_opencv.sh`; a benchmark, not a test.
//!
//! Usage: `bench_isolate [--data DIR] [--repeats N] [--json]`

use leuko::data::DataDir;
use leuko::isolate::{cells_at, crop, CropConfig, IsolationConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> ExitCode {
    let mut data: Option<PathBuf> = None;
    let mut repeats = 3usize;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().map(PathBuf::from),
            "--repeats" => repeats = args.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
            "--json" => json = true,
            other => {
                eprintln!("bench_isolate: unknown argument {other:?}\nusage: bench_isolate [--data DIR] [--repeats N] [--json]");
                return ExitCode::from(1);
            }
        }
    }
    let dir = match DataDir::resolve(data.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench_isolate: {e}");
            return ExitCode::from(1);
        }
    };
    let paths: Vec<PathBuf> = match dir.image_ids_on_disk() {
        Ok(ids) => ids.into_iter().map(|id| dir.image_path(id)).collect(),
        Err(e) => {
            eprintln!("bench_isolate: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = IsolationConfig::default();
    let crop_cfg = CropConfig::default();
    let mut found = 0usize;
    let mut rep_medians = Vec::new();
    for _ in 0..repeats {
        let mut times = Vec::with_capacity(paths.len());
        found = 0;
        for p in &paths {
            let t0 = Instant::now();
            // Read + decode + isolate + crop every found cell, like cv2.imread + find_box + crop.
            let Ok(photo) = leuko::imageio::load_rgb(p) else {
                eprintln!("bench_isolate: cannot read {}", p.display());
                return ExitCode::from(2);
            };
            // The cells' outlines too: masks at the photo's resolution, their measures and
            // polygons, as `leuko predict` reports them.
            let cells = cells_at(&photo, &cfg, 1.0);
            for c in &cells {
                std::hint::black_box((c.mask.morphometrics(), c.mask.outline()));
                std::hint::black_box(crop(&photo, &c.crop_box, &crop_cfg));
            }
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            found += usize::from(!cells.is_empty());
        }
        rep_medians.push(median(&mut times));
    }
    let mut decode = Vec::with_capacity(paths.len());
    for p in &paths {
        let t0 = Instant::now();
        let photo = leuko::imageio::load_rgb(p);
        std::hint::black_box(&photo);
        decode.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let ms = median(&mut rep_medians.clone());
    let decode_ms = median(&mut decode);
    if json {
        println!(
            "{{\"n_images\": {}, \"ms_per_image_median\": {ms:.4}, \"ms_per_image_median_each_repeat\": [{}], \"decode_only_ms_median\": {decode_ms:.4}, \"isolate_and_crop_ms\": {:.4}, \"photos_with_a_leukocyte\": {found}}}",
            paths.len(),
            rep_medians.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", "),
            ms - decode_ms
        );
    } else {
        println!(
            "leuko: {} photos, one thread, {repeats} repeats",
            paths.len()
        );
        println!(
            "  decode + isolate + outlines + crop: {ms:.3} ms/photo (median; repeats {:?})",
            rep_medians
                .iter()
                .map(|v| (v * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
        println!("  decode alone:            {decode_ms:.3} ms/photo");
        println!("  leukocyte found in {found} photos");
    }
    ExitCode::SUCCESS
}
