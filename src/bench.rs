//! Throughput benchmarks printed by `leuko bench` (figures, not tests).

use crate::model::fastconv::Algorithm;
use crate::model::NetConfig;
use crate::split::rng_for;
use crate::tensors::{images_tensor, labels_tensor};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use rand::Rng;
use serde::Serialize;
use std::time::Instant;

/// Clock assumed for the share-of-peak figure when the machine does not say its own
/// (the nominal clock of the 2-core machine the project was first measured on).
pub const FALLBACK_GHZ: f64 = 2.25;
/// fp32 FLOP per cycle per core with AVX2 and two FMA units.
pub const FLOP_PER_CYCLE: f64 = 32.0;

/// The cores' nominal clock in GHz and where it was read: the "@ x.xxGHz" of the CPU's
/// model name when it has one, else the first "cpu MHz" of /proc/cpuinfo (in a virtual
/// machine, the host's nominal clock), else [`FALLBACK_GHZ`]. The machines the project
/// runs on change, and a share of peak against another machine's clock means nothing.
pub fn nominal_ghz() -> (f64, &'static str) {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(text) => parse_cpuinfo_ghz(&text).unwrap_or((FALLBACK_GHZ, "assumed")),
        Err(_) => (FALLBACK_GHZ, "assumed"),
    }
}

fn parse_cpuinfo_ghz(cpuinfo: &str) -> Option<(f64, &'static str)> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let from_model = field("model name").and_then(|m| {
        let at = m.rsplit_once('@')?.1.trim().to_ascii_lowercase();
        at.strip_suffix("ghz")?.trim().parse::<f64>().ok()
    });
    let from_mhz = || {
        field("cpu MHz")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|mhz| mhz / 1000.0)
    };
    match from_model {
        Some(g) if g.is_finite() && g > 0.0 => Some((g, "model name")),
        _ => from_mhz()
            .filter(|g| g.is_finite() && *g > 0.0)
            .map(|g| (g, "cpu MHz")),
    }
}

/// One training-throughput measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub net: Vec<usize>,
    pub input: [usize; 4],
    pub threads: usize,
    /// How the 3x3 convolutions were computed: "winograd" (the default) or "direct".
    pub conv: &'static str,
    pub steps: usize,
    pub ms_per_step_median: f64,
    pub images_per_s: f64,
    pub gflops: f64,
    /// Clock the peak assumes, and where it was read (`nominal_ghz`).
    pub clock_ghz: f64,
    pub clock_source: &'static str,
    pub peak_gflops: f64,
    pub share_of_peak: f64,
    /// fp32 FLOP/s of a register-only FMA loop on the same threads at the same time
    /// ([`measured_fma_gflops`]): the peak at the clock the cores really run (turbo included),
    /// which the nominal clock can understate by a third. `None` without AVX2 + FMA.
    pub measured_peak_gflops: Option<f64>,
    pub share_of_measured_peak: Option<f64>,
}

/// Multiply-adds per loop iteration of [`measured_fma_gflops`]: 12 independent 8-lane
/// accumulators, enough to cover the FMA latency of two pipes.
const FMA_CHAINS: usize = 12;

/// fp32 GFLOP/s of a loop of independent AVX2 FMAs on registers, run on every thread of the
/// current rayon pool at once; the best of three short trials (about 0.1 s each). The
/// achievable compute peak of those cores: no memory traffic, clock as the CPU sets it under
/// this load. `None` where AVX2 + FMA are missing.
pub fn measured_fma_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return None;
        }
        const ITERS: usize = 20_000_000;
        let threads = rayon::current_num_threads();
        let flop = (threads * ITERS * FMA_CHAINS * 8 * 2) as f64;
        let best = (0..3)
            .map(|_| {
                let t0 = Instant::now();
                rayon::broadcast(|_| {
                    // SAFETY: AVX2 and FMA were detected above.
                    std::hint::black_box(unsafe { fma_loop(ITERS) });
                });
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        Some(flop / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// `iters` rounds of [`FMA_CHAINS`] independent 8-lane multiply-adds; returns a lane sum so
/// that the work cannot be optimised away.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(std::hint::black_box(0.999_9));
    let b = _mm256_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm256_setzero_ps(); FMA_CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut lanes = [0f32; 8];
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum()
}

/// Times `steps` training steps (forward, backward, Adam) on random data after
/// `warmup` untimed ones, like the Keras reference `bench_train.py`, with the 3x3 convolutions
/// computed by `conv`.
pub fn train_step(
    blocks: &[usize],
    height: usize,
    width: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
    conv: Algorithm,
) -> TrainBench {
    let device = crate::train::training_device();
    device.seed(42);
    let cfg = NetConfig::new(blocks.to_vec(), 4);
    let mut model = cfg.init(&device);
    let mut optim = AdamConfig::new().with_epsilon(1e-7).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = rng_for(42, "bench");
    let data: Vec<f32> = (0..batch * 3 * height * width)
        .map(|_| rng.random::<f32>())
        .collect();
    let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..4)).collect();
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let x = images_tensor(data.clone(), batch, width as u32, height as u32, &device);
        let y = labels_tensor(&labels, &device);
        let (next, loss) = crate::model::fastconv::with_algorithm(conv, || {
            let loss = loss_fn.forward(model.forward_train(x, i as u64), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (optim.step(1e-3, model, grads), loss)
        });
        model = next;
        // Reading the loss forces the step to finish (backends may be lazy).
        let _ = loss.into_data();
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let images_per_s = batch as f64 / median;
    let threads = rayon::current_num_threads();
    let gflops = cfg.forward_flops(height, width) * 3.0 * images_per_s / 1e9;
    let (clock_ghz, clock_source) = nominal_ghz();
    let peak = threads as f64 * FLOP_PER_CYCLE * clock_ghz;
    let measured = measured_fma_gflops();
    TrainBench {
        net: blocks.to_vec(),
        input: [batch, 3, height, width],
        threads,
        conv: match conv {
            Algorithm::Winograd => "winograd",
            Algorithm::Direct => "direct",
        },
        steps,
        ms_per_step_median: median * 1000.0,
        images_per_s,
        gflops,
        clock_ghz,
        clock_source,
        peak_gflops: peak,
        share_of_peak: gflops / peak,
        measured_peak_gflops: measured,
        share_of_measured_peak: measured.map(|m| gflops / m),
    }
}

/// One end-to-end prediction-latency measurement (`leuko bench predict`).
#[derive(Debug, Clone, Serialize)]
pub struct PredictBench {
    pub photos: usize,
    pub repeats: usize,
    /// Leukocytes found per pass over the photos.
    pub cells: usize,
    /// Single thread, per photo: read + decode the file.
    pub decode_ms_median: f64,
    /// Isolation + crops.
    pub isolate_ms_median: f64,
    /// The network on the photo's crops (one batch).
    pub network_ms_median: f64,
    /// All three, timed as one span.
    pub total_ms_median: f64,
    pub total_ms_p95: f64,
    /// Photos classified in parallel like `leuko predict FOLDER --threads N`.
    pub folder_threads: usize,
    /// Median over `repeats` passes.
    pub folder_photos_per_s: f64,
}

fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile of unsorted values (0 for none).
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let k = ((q / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[k.min(v.len() - 1)]
}

/// Times `leuko predict`'s work per photo on one thread (read + decode,
/// isolate + crop, network: each photo's cells in one batch) over `photos`,
/// `repeats` passes after `warmup` untimed photos, then the photos per
/// second of a `folder_threads`-thread pool classifying them all in parallel.
pub fn predict_latency(
    classifier: &crate::predict::Classifier,
    photos: &[std::path::PathBuf],
    warmup: usize,
    repeats: usize,
    folder_threads: usize,
) -> crate::Result<PredictBench> {
    use rayon::prelude::*;
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| crate::LeukoError::Invalid(format!("cannot start worker threads: {e}")))
    };
    let (mut dec, mut iso, mut net, mut tot) = (vec![], vec![], vec![], vec![]);
    let mut cells = 0;
    pool(1)?.install(|| -> crate::Result<()> {
        for p in photos.iter().cycle().take(warmup) {
            classifier.classify_file(p)?;
        }
        for _ in 0..repeats {
            cells = 0;
            for p in photos {
                let t0 = Instant::now();
                let img = crate::imageio::load_rgb(p)?;
                let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
                let (pred, t) = classifier.classify_timed(&img)?;
                tot.push(t0.elapsed().as_secs_f64() * 1e3);
                dec.push(decode_ms);
                iso.push(t.isolate_ms);
                net.push(t.network_ms);
                cells += pred.cells.len();
            }
        }
        Ok(())
    })?;
    let mut rates = Vec::new();
    pool(folder_threads.max(1))?.install(|| -> crate::Result<()> {
        for _ in 0..repeats {
            let t0 = Instant::now();
            photos
                .par_iter()
                .map(|p| classifier.classify_file(p).map(|_| ()))
                .collect::<crate::Result<Vec<()>>>()?;
            rates.push(photos.len() as f64 / t0.elapsed().as_secs_f64());
        }
        Ok(())
    })?;
    Ok(PredictBench {
        photos: photos.len(),
        repeats,
        cells,
        decode_ms_median: median(&mut dec),
        isolate_ms_median: median(&mut iso),
        network_ms_median: median(&mut net),
        total_ms_median: median(&mut tot),
        total_ms_p95: percentile(&mut tot, 95.0),
        folder_threads: folder_threads.max(1),
        folder_photos_per_s: median(&mut rates),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_cpuinfo_ghz;

    /// The peak loop really multiplies and adds: after `n` rounds every lane holds
    /// `b * (1 + a + ... + a^(n-1))`, summed over 12 accumulators of 8 lanes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fma_loop_computes_what_it_counts() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            assert!(super::measured_fma_gflops().is_none());
            return;
        }
        // SAFETY: features detected above.
        let (one, three) = unsafe { (super::fma_loop(1), super::fma_loop(3)) };
        let (a, b) = (0.999_9f64, 1e-7f64);
        let lanes = (super::FMA_CHAINS * 8) as f64;
        assert!((one as f64 - lanes * b).abs() < 1e-9, "{one}");
        let want = lanes * b * (1.0 + a + a * a);
        assert!((three as f64 - want).abs() < 1e-9, "{three} vs {want}");
        let g = super::measured_fma_gflops().expect("AVX2 + FMA present");
        assert!(g.is_finite() && g > 0.0, "{g}");
    }

    #[test]
    fn clock_is_read_from_the_model_name_else_cpu_mhz() {
        let intel = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\ncpu MHz\t\t: 3100.000\n";
        assert_eq!(parse_cpuinfo_ghz(intel), Some((2.4, "model name")));
        let vm = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.138\n";
        let (g, src) = parse_cpuinfo_ghz(vm).unwrap();
        assert!((g - 2.596138).abs() < 1e-9 && src == "cpu MHz");
        assert_eq!(parse_cpuinfo_ghz("processor\t: 0\n"), None);
        assert_eq!(parse_cpuinfo_ghz("cpu MHz\t: nan\n"), None);
    }
}
