//! The compute peak of this machine's cores, for "share of peak" figures in benchmarks: the
//! nominal clock and FLOP per cycle, and a measured FMA loop.

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
