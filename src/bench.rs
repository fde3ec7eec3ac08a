//! Throughput benchmarks printed by `leuko bench` (figures, not tests).

use crate::model::NetConfig;
use crate::split::rng_for;
use crate::tensors::{images_tensor, labels_tensor};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use rand::Rng;
use serde::Serialize;
use std::time::Instant;

/// Nominal clock of this machine's cores, for the share-of-peak figure.
pub const NOMINAL_GHZ: f64 = 2.25;
/// fp32 FLOP per cycle per core with AVX2 and two FMA units.
pub const FLOP_PER_CYCLE: f64 = 32.0;

/// One training-throughput measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub net: Vec<usize>,
    pub input: [usize; 4],
    pub threads: usize,
    pub steps: usize,
    pub ms_per_step_median: f64,
    pub images_per_s: f64,
    pub gflops: f64,
    pub peak_gflops: f64,
    pub share_of_peak: f64,
}

/// Times `steps` training steps (forward, backward, Adam) on random data after
/// `warmup` untimed ones, like the Keras reference `bench_train.py`.
pub fn train_step(
    blocks: &[usize],
    height: usize,
    width: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
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
        let loss = loss_fn.forward(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
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
    let peak = threads as f64 * FLOP_PER_CYCLE * NOMINAL_GHZ;
    TrainBench {
        net: blocks.to_vec(),
        input: [batch, 3, height, width],
        threads,
        steps,
        ms_per_step_median: median * 1000.0,
        images_per_s,
        gflops,
        peak_gflops: peak,
        share_of_peak: gflops / peak,
    }
}
