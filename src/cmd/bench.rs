//! `leuko bench`: throughput figures (benchmarks, not tests).

use super::{DataArgs, Format};
use leuko::data::{ClassSet, DataDir, Dataset};
use leuko_kernels::conv::Algorithm;
use std::path::PathBuf;
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
    /// End-to-end latency per photo (decode + isolate + classify), one thread, and a folder's photos/s.
    Predict(PredictBenchArgs),
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
    #[arg(long, value_enum, ignore_case = true, default_value = "final")]
    pub net: NetChoice,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// How the 3x3 convolutions with 8 or more channels are computed (direct: the earlier kernels, to compare).
    #[arg(long, value_enum, ignore_case = true, default_value = "winograd")]
    pub conv: ConvChoice,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 15)]
    pub steps: usize,
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvChoice {
    /// Winograd F(2x2, 3x3).
    Winograd,
    /// Direct convolution.
    Direct,
}

/// Photos: the test part of the default split (`leuko split`, seed 42), or of --split FILE.
#[derive(Debug, clap::Args)]
pub struct PredictBenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// A split file (e.g. the Keras reference's split.json, to time the same photos); default: `leuko split` seed 42.
    #[arg(long, value_name = "FILE")]
    pub split: Option<PathBuf>,
    /// Near-duplicate groups from `leuko data audit --out` for the default split (default: run the audit now).
    #[arg(long, value_name = "groups.json")]
    pub groups: Option<PathBuf>,
    /// Model file (default: the embedded model).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Untimed photos first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Passes over the photos (the median over all is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Threads of the folder throughput measurement.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub folder_threads: usize,
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
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
            let conv = match t.conv {
                ConvChoice::Winograd => Algorithm::Winograd,
                ConvChoice::Direct => Algorithm::Direct,
            };
            let r = leuko::bench::train_step(&blocks, h, w, t.batch, t.warmup, t.steps, conv);
            match t.format {
                Format::Json => println!("{}", serde_json::to_string(&r)?),
                Format::Table => {
                    println!(
                        "leuko train step, net {:?}, input {:?}, {} threads, {} 3x3 convolutions: {:.1} ms/step (median of {}), {:.1} images/s, {:.1} GFLOP/s = {:.0}% of {:.0} GFLOP/s fp32 peak ({} cores x {} FLOP/cycle x {:.2} GHz, clock from {})",
                        r.net, r.input, r.threads, r.conv, r.ms_per_step_median, r.steps, r.images_per_s, r.gflops, 100.0 * r.share_of_peak, r.peak_gflops,
                        r.threads, leuko_kernels::peak::FLOP_PER_CYCLE, r.clock_ghz, r.clock_source
                    );
                    if let (Some(m), Some(share)) =
                        (r.measured_peak_gflops, r.share_of_measured_peak)
                    {
                        println!(
                            "  = {:.0}% of {:.0} GFLOP/s measured by an FMA loop on the same {} threads (the clock the cores really run at)",
                            100.0 * share, m, r.threads
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchWhat::Predict(p) => run_predict(p),
    }
}

fn run_predict(a: PredictBenchArgs) -> anyhow::Result<ExitCode> {
    if a.repeats == 0 || a.folder_threads == 0 {
        anyhow::bail!("--repeats and --folder-threads must be at least 1");
    }
    let dir = DataDir::resolve(a.data.data.as_deref())?;
    let ds = Dataset::load(&dir, &ClassSet::default_four())?;
    let split = match &a.split {
        Some(path) => leuko::split::Split::read(path, &ds)?,
        None => {
            let groups = super::data::groups_for(&dir, a.groups.as_deref(), true)?;
            leuko::split::make_split(&ds, &groups.group_of(), 42)
        }
    };
    let photos: Vec<PathBuf> = split
        .test
        .iter()
        .map(|s| dir.image_path(s.image_id))
        .collect();
    if photos.is_empty() {
        anyhow::bail!("the split has no test photos");
    }
    let classifier = leuko::predict::Classifier::from_option(a.model.as_deref())?;
    let r =
        leuko::bench::predict_latency(&classifier, &photos, a.warmup, a.repeats, a.folder_threads)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&r)?),
        Format::Table => println!(
            "leuko predict, {} test photos x {} passes ({} leukocytes per pass), 1 thread, median ms/photo: \
             decode {:.2}, isolate {:.2}, network {:.2}, total {:.2} (p95 {:.2}); \
             folder with {} threads: {:.1} photos/s",
            r.photos, r.repeats, r.cells, r.decode_ms_median, r.isolate_ms_median, r.network_ms_median,
            r.total_ms_median, r.total_ms_p95, r.folder_threads, r.folder_photos_per_s
        ),
    }
    Ok(ExitCode::SUCCESS)
}
