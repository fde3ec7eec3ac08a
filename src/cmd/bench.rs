//! `leuko bench`: throughput figures (benchmarks, not tests).

use super::Format;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Training steps per second of a reference network on random data (batch 32, Adam).
    Train(TrainBenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetChoice {
    /// [16, 32, 48, 64] on 128x128 crops.
    Final,
    /// [16, 32] on 256x192 whole photos.
    Baseline,
}

#[derive(Debug, clap::Args)]
pub struct TrainBenchArgs {
    #[arg(long, value_enum, default_value = "final")]
    pub net: NetChoice,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 15)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| anyhow::anyhow!("--threads: {e}"))?;
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    match a.what {
        BenchWhat::Train(t) => {
            set_threads(t.threads)?;
            if t.steps == 0 || t.batch == 0 {
                anyhow::bail!("--steps and --batch must be at least 1");
            }
            let (blocks, h, w) = match t.net {
                NetChoice::Final => (vec![16, 32, 48, 64], 128, 128),
                NetChoice::Baseline => (vec![16, 32], 192, 256),
            };
            let r = leuko::bench::train_step(&blocks, h, w, t.batch, t.warmup, t.steps);
            match t.format {
                Format::Json => println!("{}", serde_json::to_string(&r)?),
                Format::Table => println!(
                    "leuko train step, net {:?}, input {:?}, {} threads: {:.1} ms/step (median of {}), {:.1} images/s, {:.1} GFLOP/s = {:.0}% of {:.0} GFLOP/s peak",
                    r.net, r.input, r.threads, r.ms_per_step_median, r.steps, r.images_per_s, r.gflops, 100.0 * r.share_of_peak, r.peak_gflops
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
