//! Benchmarks `leuko_kernels::conv::conv2d` against burn's stock `conv2d` on every
//! convolution shape of the classifier, forward alone and forward + backward.
//!
//! ```text
//! cargo bench -p leuko-kernels --bench conv [-- --runs 7 --batch 32 --net final|baseline|both
//!                                          --only "b0 conv2" --no-stock --malloc-tuned --cpu-clock
//!                                          --direct]
//! ```
//!
//! Each measurement is the median of `--runs` timed runs after one warm-up run. Forward runs on
//! `Device::flex()`. Backward runs `y.backward()` on `Device::flex().autodiff()` (the gradients
//! of `sum(y)`; burn seeds them with a ones tensor, whose creation time, the "seed" column, is
//! measured separately and subtracted), computing the gradients the network needs: input
//! gradient except for the first block's layers, whose input is the image; weight and bias
//! always. GFLOP/s count 2 FLOP per multiply-add of a direct convolution (with Winograd, the default
//! for 3x3 layers with 8 or more channels, effective figures: it does 2.25x fewer). `--direct`
//! times the direct kernels instead. Without
//! `RAYON_NUM_THREADS` the pool gets 2 threads.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::module::conv2d as stock_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use leuko_kernels::conv;

/// One convolution of the network: name, input channels, output channels, height, width,
/// kernel size, and whether its input needs a gradient.
struct Layer {
    name: String,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    grad_input: bool,
}

impl Layer {
    /// Forward FLOPs for a batch of `n`.
    fn flops(&self, n: usize) -> f64 {
        2.0 * (n * self.c_out * self.c_in * self.k * self.k * self.h * self.w) as f64
    }

    /// FLOPs of forward plus the requested gradients.
    fn train_flops(&self, n: usize) -> f64 {
        self.flops(n) * if self.grad_input { 3.0 } else { 2.0 }
    }
}

/// The convolutions of a ResNet-like net with `blocks` channels on `h x w` RGB input: per block
/// conv3x3(c_in→c), conv3x3(c→c), a 1x1 shortcut when c_in ≠ c, then 2x2 max pooling.
fn layers(blocks: &[usize], h: usize, w: usize, tag: &str) -> Vec<Layer> {
    let (mut h, mut w, mut c_in) = (h, w, 3);
    let mut out = Vec::new();
    for (i, &c) in blocks.iter().enumerate() {
        let first = i == 0;
        let mut push = |name: &str, c_in, c_out, k, grad_input| {
            out.push(Layer {
                name: format!("{tag} b{i} {name}"),
                c_in,
                c_out,
                h,
                w,
                k,
                grad_input,
            })
        };
        push("conv1", c_in, c, 3, !first);
        push("conv2", c, c, 3, true);
        if c_in != c {
            push("1x1", c_in, c, 1, !first);
        }
        h /= 2;
        w /= 2;
        c_in = c;
    }
    out
}

/// Median of `runs` timings (milliseconds) of `f`, after one untimed warm-up call.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    median(runs, || {
        let t0 = Clock::now();
        f();
        t0.elapsed_ms()
    })
}

/// What the benchmark measures: wall-clock time (the default), or, with `--cpu-clock`, the
/// process's CPU time (all threads, user + system) divided by the rayon thread count, which
/// stays meaningful while other processes compete for the cores (idle rayon workers spinning
/// briefly before they sleep count too, so it slightly overstates).
#[derive(Clone, Copy)]
enum Clock {
    Wall(Instant),
    Cpu(f64),
}

/// Set once by `main` from `--cpu-clock`.
static CPU_CLOCK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Clock {
    fn now() -> Self {
        if CPU_CLOCK.load(std::sync::atomic::Ordering::Relaxed) {
            Clock::Cpu(process_cpu_ms())
        } else {
            Clock::Wall(Instant::now())
        }
    }

    fn elapsed_ms(self) -> f64 {
        match self {
            Clock::Wall(t0) => t0.elapsed().as_secs_f64() * 1e3,
            Clock::Cpu(t0) => (process_cpu_ms() - t0) / rayon::current_num_threads() as f64,
        }
    }
}

/// CPU time of this process so far (all threads, user + system), milliseconds.
fn process_cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Median of `runs` values of `f`, after one untimed warm-up call.
fn median(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs).map(|_| f()).collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Which convolution implementation a measurement uses.
#[derive(Clone, Copy)]
enum Impl {
    Stock,
    Fast,
}

fn conv(which: Impl, x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, p: usize) -> Tensor<4> {
    match which {
        Impl::Stock => stock_conv2d(x, w, Some(b), ConvOptions::new([1, 1], [p, p], [1, 1], 1)),
        Impl::Fast => conv::conv2d(x, w, Some(b), p),
    }
}

/// Median times of one layer, milliseconds.
#[derive(Clone, Copy)]
struct Timing {
    /// Forward on `Device::flex()`.
    fwd: f64,
    /// `backward()` on `Device::flex().autodiff()`, minus the median time burn takes to create
    /// its ones seed of the output's shape (not convolution work, and the same for both).
    bwd: f64,
}

/// Times `layer` at batch `n`; `seed` is the time to subtract from each backward.
fn time_layer(layer: &Layer, n: usize, runs: usize, which: Impl, seed: f64) -> Timing {
    let p = layer.k / 2;
    let dims_x = [n, layer.c_in, layer.h, layer.w];
    let dims_w = [layer.c_out, layer.c_in, layer.k, layer.k];
    let uniform = Distribution::Uniform(-1.0, 1.0);

    let dev = Device::flex();
    let x = Tensor::<4>::random(dims_x, uniform, &dev);
    let w = Tensor::<4>::random(dims_w, uniform, &dev);
    let b = Tensor::<1>::random([layer.c_out], uniform, &dev);
    let fwd = median_ms(runs, || {
        std::hint::black_box(conv(which, x.clone(), w.clone(), b.clone(), p));
    });

    let ad = Device::flex().autodiff();
    let x = Tensor::<4>::random(dims_x, uniform, &ad);
    let x = if layer.grad_input {
        x.require_grad()
    } else {
        x
    };
    let w = Tensor::<4>::random(dims_w, uniform, &ad).require_grad();
    let b = Tensor::<1>::random([layer.c_out], uniform, &ad).require_grad();
    let bwd = median(runs, || {
        let y = conv(which, x.clone(), w.clone(), b.clone(), p);
        // `backward` on a non-scalar seeds it with ones: the gradients of `sum(y)`.
        let t0 = Clock::now();
        std::hint::black_box(y.backward());
        t0.elapsed_ms()
    });
    Timing {
        fwd,
        bwd: bwd - seed,
    }
}

/// Median time burn takes to build the backward seed (a ones tensor) of `layer`'s output.
fn seed_ms(layer: &Layer, n: usize, runs: usize) -> f64 {
    let dev = Device::flex();
    median_ms(runs, || {
        std::hint::black_box(Tensor::<4>::ones([n, layer.c_out, layer.h, layer.w], &dev));
    })
}

/// Makes glibc malloc keep and reuse freed memory instead of returning every large buffer to
/// the kernel, so that tensors stop costing page faults and kernel page zeroing on each use.
/// Process-wide; the benchmark applies it only with `--malloc-tuned`.
fn tune_malloc() -> Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // No mmap for large blocks (a 32 MiB activation exceeds the largest mmap threshold glibc
        // accepts), never trim the heap top, grow it 512 MiB at a time.
        let settings = [
            (libc::M_MMAP_MAX, 0),
            (libc::M_TRIM_THRESHOLD, i32::MAX),
            (libc::M_TOP_PAD, 512 << 20),
        ];
        for (param, value) in settings {
            // SAFETY: mallopt only changes allocator parameters; called before other threads
            // allocate.
            if unsafe { libc::mallopt(param, value) } != 1 {
                bail!("mallopt({param}, {value}) failed");
            }
        }
        Ok(())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    bail!("--malloc-tuned needs glibc")
}

/// Prints one result row: forward and backward, stock and fast, speedups and throughput.
fn print_row(name: &str, flop_img: f64, flops: [f64; 2], stock: Timing, fast: Timing, seed: f64) {
    let gf = |flops: f64, ms: f64| flops / ms / 1e6;
    println!(
        "{:<26} {:>6.1} | {:>7.1} {:>8.1} {:>6.1} {:>5.2} | {:>7.1} {:>8.1} {:>6.1} {:>5.2} | {:>6.1} {:>5.2} | {:>5.1}",
        name,
        flop_img / 1e6,
        stock.fwd,
        fast.fwd,
        gf(flops[0], fast.fwd),
        stock.fwd / fast.fwd,
        stock.bwd,
        fast.bwd,
        gf(flops[1], fast.bwd),
        stock.bwd / fast.bwd,
        gf(flops[0] + flops[1], fast.fwd + fast.bwd),
        (stock.fwd + stock.bwd) / (fast.fwd + fast.bwd),
        seed,
    );
}

struct Args {
    runs: usize,
    batch: usize,
    net: String,
    only: Option<String>,
    stock: bool,
    malloc_tuned: bool,
    cpu_clock: bool,
    direct: bool,
}

const USAGE: &str = "usage: bench_conv [--runs N] [--batch N] [--net final|baseline|both] \
[--only NAME-SUBSTRING] [--no-stock] [--malloc-tuned] [--cpu-clock] [--direct]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        runs: 5,
        batch: 32,
        net: "final".into(),
        only: None,
        stock: true,
        malloc_tuned: false,
        cpu_clock: false,
        direct: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--batch" => args.batch = value()?.parse().context("--batch")?,
            "--net" => args.net = value()?,
            "--only" => args.only = Some(value()?),
            "--no-stock" => args.stock = false,
            "--malloc-tuned" => args.malloc_tuned = true,
            "--cpu-clock" => args.cpu_clock = true,
            "--direct" => args.direct = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if args.runs == 0 || args.batch == 0 {
        bail!("--runs and --batch must be positive");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let algorithm = if args.direct {
        conv::Algorithm::Direct
    } else {
        conv::Algorithm::Winograd
    };
    conv::with_algorithm(algorithm, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    if args.malloc_tuned {
        tune_malloc()?;
    }
    CPU_CLOCK.store(args.cpu_clock, std::sync::atomic::Ordering::Relaxed);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build_global()
            .context("configuring the rayon pool")?;
    }
    let mut set = Vec::new();
    if matches!(args.net.as_str(), "final" | "both") {
        set.extend(layers(&[16, 32, 48, 64], 128, 128, "final"));
    }
    if matches!(args.net.as_str(), "baseline" | "both") {
        set.extend(layers(&[16, 32], 192, 256, "base"));
    }
    if let Some(only) = &args.only {
        set.retain(|l| l.name.contains(only.as_str()));
    }
    if set.is_empty() {
        bail!("no layer selected: --net must be final, baseline or both, --only a name part");
    }

    let n = args.batch;
    println!(
        "batch {n}, median of {} runs, {} clock, {} rayon threads, fast path on flex: {} ({:?} 3x3), malloc tuned: {}",
        args.runs,
        if args.cpu_clock { "CPU / threads" } else { "wall" },
        rayon::current_num_threads(),
        conv::is_fast_path(&Device::flex()),
        conv::algorithm(),
        args.malloc_tuned,
    );
    println!(
        "{:<26} {:>6} | {:>16} {:>6} {:>5} | {:>16} {:>6} {:>5} | {:>6} {:>5} | {:>5}",
        "", "MFLOP", "forward ms", "GF/s", "x", "backward ms", "GF/s", "x", "fwd+bwd", "x", "seed"
    );
    println!(
        "{:<26} {:>6} | {:>7} {:>8} {:>6} {:>5} | {:>7} {:>8} {:>6} {:>5} | {:>6} {:>5} | {:>5}",
        "layer", "/img", "stock", "fast", "fast", "", "stock", "fast", "fast", "", "GF/s", "", "ms"
    );
    let mut tot = [0.0f64; 5];
    let (mut flops_fwd, mut flops_bwd) = (0.0, 0.0);
    for layer in &set {
        let seed = seed_ms(layer, n, args.runs);
        let stock = if args.stock {
            time_layer(layer, n, args.runs, Impl::Stock, seed)
        } else {
            Timing {
                fwd: f64::NAN,
                bwd: f64::NAN,
            }
        };
        let fast = time_layer(layer, n, args.runs, Impl::Fast, seed);
        let (f_fwd, f_bwd) = (layer.flops(n), layer.train_flops(n) - layer.flops(n));
        print_row(
            &format!(
                "{} {}x{} {}→{}",
                layer.name, layer.k, layer.k, layer.c_in, layer.c_out
            ),
            layer.flops(1),
            [f_fwd, f_bwd],
            stock,
            fast,
            seed,
        );
        for (t, v) in tot
            .iter_mut()
            .zip([stock.fwd, fast.fwd, stock.bwd, fast.bwd, seed])
        {
            *t += v;
        }
        flops_fwd += f_fwd;
        flops_bwd += f_bwd;
    }
    let [sf, ff, sb, fb, seed] = tot;
    print_row(
        "TOTAL",
        flops_fwd / n as f64,
        [flops_fwd, flops_bwd],
        Timing { fwd: sf, bwd: sb },
        Timing { fwd: ff, bwd: fb },
        seed,
    );
    // fp32 peak of the pool's cores at this machine's nominal clock.
    let threads = rayon::current_num_threads();
    let (ghz, clock_source) = leuko_kernels::peak::nominal_ghz();
    let peak = threads as f64 * leuko_kernels::peak::FLOP_PER_CYCLE * ghz;
    println!(
        "all convolutions, forward + backward: stock {:.1} img/s, fast {:.1} img/s \
         ({:.0}% of {peak:.0} GFLOP/s fp32 peak: {threads} cores x {} FLOP/cycle x {ghz:.2} GHz, \
         clock from {clock_source})",
        n as f64 / (sf + sb) * 1e3,
        n as f64 / (ff + fb) * 1e3,
        (flops_fwd + flops_bwd) / (ff + fb) / 1e6 / peak * 100.0,
        leuko_kernels::peak::FLOP_PER_CYCLE,
    );
    if let Some(measured) = leuko_kernels::peak::measured_fma_gflops() {
        println!(
            "  = {:.0}% of {measured:.0} GFLOP/s measured by an FMA loop on the same {threads} threads",
            (flops_fwd + flops_bwd) / (ff + fb) / 1e6 / measured * 100.0
        );
    }
    Ok(())
}
