//! Throughput benchmarks printed by `leuko bench` (figures, not tests).

use crate::model::NetConfig;
use crate::preprocess::{images_tensor, labels_tensor};
use crate::split::rng_for;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use leuko_kernels::conv::Algorithm;
use leuko_kernels::peak::{measured_fma_gflops, nominal_ghz, FLOP_PER_CYCLE};
use rand::Rng;
use serde::Serialize;
use std::time::Instant;

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
        let (next, loss) = leuko_kernels::conv::with_algorithm(conv, || {
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
