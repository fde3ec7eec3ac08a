//! The residual add + ReLU + 2x2 max-pool of a block, forward and backward, over one `NCHW`
//! plane at a time.
//!
//! Written for the compiler once per path: a scalar version for any CPU, and an AVX2 version that
//! handles eight pooling windows per step (the even and odd columns of two input rows split with
//! two shuffles, the winner chosen with compares and blends). Left to the auto-vectoriser, the
//! interleaved columns and the "first strict maximum" rule came out as scalar code with
//! branches: the backward pass alone took 5% of a training step (perf). Both paths
//! compute the same additions and comparisons, so they give the same bits.

use std::mem::MaybeUninit;

/// Winner of a window whose maximum was not positive (ReLU zero: no gradient passes).
pub(super) const NONE: u8 = u8::MAX;

/// Pooled `max(0, y + skip)` over one `h x w` plane (`y` and `skip` start there) into the
/// `(h / 2) x (w / 2)` plane `out` and, when `IDX`, each window's winner into `idx`: 0-3 in the
/// order (0,0), (0,1), (1,0), (1,1), the first strict maximum, or [`NONE`]. Odd trailing rows and
/// columns are dropped, as burn's pool does. `w` must be at least 2.
pub(super) fn plane<const IDX: bool>(
    y: &[f32],
    skip: &[f32],
    w: usize,
    out: &mut [f32],
    idx: &mut [u8],
) {
    let wo = w / 2;
    let simd = has_avx2();
    for (oy, o) in out.chunks_exact_mut(wo).enumerate() {
        let r = 2 * oy * w;
        let ys = [&y[r..r + 2 * wo], &y[r + w..r + w + 2 * wo]];
        let ss = [&skip[r..r + 2 * wo], &skip[r + w..r + w + 2 * wo]];
        let ix: &mut [u8] = if IDX {
            &mut idx[oy * wo..(oy + 1) * wo]
        } else {
            &mut []
        };
        #[cfg(target_arch = "x86_64")]
        let done = if simd {
            // SAFETY: AVX2 was detected on this CPU.
            unsafe { avx2::row::<IDX>(ys, ss, o, ix) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = {
            let _ = simd;
            0
        };
        row::<IDX>(ys, ss, o, ix, done);
    }
}

/// Pooling backward over one plane: the `h x w` input gradient `d`, written whole, from the
/// window gradients `g` and winners `idx` of [`plane`]: each window's gradient goes to the
/// element that won it, 0 to the others and to odd trailing rows and columns.
pub(super) fn plane_grad(g: &[f32], idx: &[u8], w: usize, d: &mut [MaybeUninit<f32>]) {
    let wo = w / 2;
    let ho = g.len().checked_div(wo).unwrap_or(0);
    let simd = has_avx2();
    for oy in 0..ho {
        let (top, rest) = d[2 * oy * w..].split_at_mut(w);
        let bottom = &mut rest[..w];
        let (gr, ir) = (&g[oy * wo..(oy + 1) * wo], &idx[oy * wo..(oy + 1) * wo]);
        #[cfg(target_arch = "x86_64")]
        let done = if simd {
            // SAFETY: AVX2 was detected on this CPU.
            unsafe { avx2::grad_rows(gr, ir, top, bottom) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = {
            let _ = simd;
            0
        };
        grad_rows(gr, ir, top, bottom, done);
    }
    for v in &mut d[2 * ho * w..] {
        v.write(0.0);
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Windows `from ..` of one row of [`plane`]: input rows `y`, skip rows `s` (`2 * out.len()`
/// each).
fn row<const IDX: bool>(
    [y0, y1]: [&[f32]; 2],
    [s0, s1]: [&[f32]; 2],
    out: &mut [f32],
    idx: &mut [u8],
    from: usize,
) {
    for ox in from..out.len() {
        let (a, b) = (2 * ox, 2 * ox + 1);
        let v = [y0[a] + s0[a], y0[b] + s0[b], y1[a] + s1[a], y1[b] + s1[b]];
        let mut best = 0f32;
        let mut k = NONE;
        for (q, &v) in v.iter().enumerate() {
            if v > best {
                best = v;
                k = q as u8;
            }
        }
        out[ox] = best;
        if IDX {
            idx[ox] = k;
        }
    }
}

/// Windows `from ..` of one row of [`plane_grad`]; also zeroes an odd last column.
fn grad_rows(
    g: &[f32],
    idx: &[u8],
    top: &mut [MaybeUninit<f32>],
    bottom: &mut [MaybeUninit<f32>],
    from: usize,
) {
    let wo = g.len();
    for ox in from..wo {
        let (gv, k) = (g[ox], idx[ox]);
        let pick = |q: u8| if k == q { gv } else { 0.0 };
        top[2 * ox].write(pick(0));
        top[2 * ox + 1].write(pick(1));
        bottom[2 * ox].write(pick(2));
        bottom[2 * ox + 1].write(pick(3));
    }
    for v in top[2 * wo..].iter_mut().chain(bottom[2 * wo..].iter_mut()) {
        v.write(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::NONE;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Even and odd elements of the 16 floats at `p`, each in order.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn split_columns(p: *const f32) -> (__m256, __m256) {
        let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        // Within each 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; then 64-bit pairs reordered.
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let fix = |v: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        };
        (fix(even), fix(odd))
    }

    /// The first `out.len() / 8 * 8` windows of [`super::row`]; returns how many it did.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row<const IDX: bool>(
        [y0, y1]: [&[f32]; 2],
        [s0, s1]: [&[f32]; 2],
        out: &mut [f32],
        idx: &mut [u8],
    ) -> usize {
        let n = out.len() / 8 * 8;
        assert!(y0.len().min(y1.len()).min(s0.len()).min(s1.len()) >= 2 * n);
        assert!(!IDX || idx.len() >= n);
        for ox in (0..n).step_by(8) {
            let (ye0, yo0) = split_columns(y0.as_ptr().add(2 * ox));
            let (se0, so0) = split_columns(s0.as_ptr().add(2 * ox));
            let (ye1, yo1) = split_columns(y1.as_ptr().add(2 * ox));
            let (se1, so1) = split_columns(s1.as_ptr().add(2 * ox));
            let v = [
                _mm256_add_ps(ye0, se0),
                _mm256_add_ps(yo0, so0),
                _mm256_add_ps(ye1, se1),
                _mm256_add_ps(yo1, so1),
            ];
            let mut best = _mm256_setzero_ps();
            let mut k = _mm256_set1_epi32(NONE as i32);
            for (q, &v) in v.iter().enumerate() {
                // Ordered greater-than: false for NaN, as `v > best` in the scalar path.
                let wins = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best);
                best = _mm256_blendv_ps(best, v, wins);
                k = _mm256_blendv_epi8(k, _mm256_set1_epi32(q as i32), _mm256_castps_si256(wins));
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(ox), best);
            if IDX {
                // 0-3 or 255 per 32-bit lane, packed to bytes: [k0..k3 x4 | k4..k7 x4].
                let p = _mm256_packus_epi16(_mm256_packus_epi32(k, k), _mm256_packus_epi32(k, k));
                let lo = _mm256_extract_epi32::<0>(p) as u32;
                let hi = _mm256_extract_epi32::<4>(p) as u32;
                let bytes = ((hi as u64) << 32 | lo as u64).to_le_bytes();
                idx[ox..ox + 8].copy_from_slice(&bytes);
            }
        }
        n
    }

    /// The first `g.len() / 8 * 8` windows of [`super::grad_rows`]; returns how many it did.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn grad_rows(
        g: &[f32],
        idx: &[u8],
        top: &mut [MaybeUninit<f32>],
        bottom: &mut [MaybeUninit<f32>],
    ) -> usize {
        let n = g.len() / 8 * 8;
        assert!(idx.len() >= n && top.len() >= 2 * n && bottom.len() >= 2 * n);
        let (t, b) = (
            top.as_mut_ptr() as *mut f32,
            bottom.as_mut_ptr() as *mut f32,
        );
        for ox in (0..n).step_by(8) {
            let gv = _mm256_loadu_ps(g.as_ptr().add(ox));
            let k = _mm256_cvtepu8_epi32(_mm_loadl_epi64(idx.as_ptr().add(ox) as *const __m128i));
            // The gradient where the window's winner is `q`, +0.0 elsewhere.
            let pick = |q: i32| {
                let hit = _mm256_cmpeq_epi32(k, _mm256_set1_epi32(q));
                _mm256_and_ps(gv, _mm256_castsi256_ps(hit))
            };
            // Interleave the two columns of 8 windows into 16 consecutive elements.
            let store = |row: *mut f32, left: __m256, right: __m256| {
                let lo = _mm256_unpacklo_ps(left, right);
                let hi = _mm256_unpackhi_ps(left, right);
                _mm256_storeu_ps(row, _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(row.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
            };
            store(t.add(2 * ox), pick(0), pick(1));
            store(b.add(2 * ox), pick(2), pick(3));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with ties, negatives, zeros and a NaN, so that every branch of the winner rule
    /// is taken.
    fn values(len: usize, salt: usize) -> Vec<f32> {
        (0..len)
            .map(|i| match (i * 7 + salt * 13) % 23 {
                0 => f32::NAN,
                r => (r as f32 - 11.0) * 0.5,
            })
            .collect()
    }

    fn finish(d: Vec<MaybeUninit<f32>>) -> Vec<u32> {
        // SAFETY: every element was written by the function under test (NaN-filled before).
        d.into_iter()
            .map(|v| unsafe { v.assume_init() }.to_bits())
            .collect()
    }

    /// The AVX2 path (taken on this CPU when it has AVX2) must give the scalar path's bits,
    /// forward (values and winners) and backward, for widths on and off its 8-window steps.
    #[test]
    fn simd_and_scalar_paths_agree_bit_for_bit() {
        let (mut seen_none, mut seen_win) = (false, false);
        for (h, w) in [(4, 16), (5, 17), (6, 38), (2, 2), (3, 50)] {
            let (ho, wo) = (h / 2, w / 2);
            let (y, skip) = (values(h * w, 1), values(h * w, 2));
            let mut out = vec![0f32; ho * wo];
            let mut idx = vec![0u8; ho * wo];
            plane::<true>(&y, &skip, w, &mut out, &mut idx);
            let (mut out_s, mut idx_s) = (vec![0f32; ho * wo], vec![0u8; ho * wo]);
            for oy in 0..ho {
                let r = 2 * oy * w;
                let rows = |t: &[f32]| [t[r..].to_vec(), t[r + w..].to_vec()];
                let (ys, ss) = (rows(&y), rows(&skip));
                row::<true>(
                    [&ys[0], &ys[1]],
                    [&ss[0], &ss[1]],
                    &mut out_s[oy * wo..(oy + 1) * wo],
                    &mut idx_s[oy * wo..(oy + 1) * wo],
                    0,
                );
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&out_s), "{h}x{w} forward");
            assert_eq!(idx, idx_s, "{h}x{w} winners");
            assert!(idx.iter().all(|&k| k < 4 || k == NONE));
            seen_none |= idx.contains(&NONE);
            seen_win |= idx.iter().any(|&k| k < 4);

            let g = values(ho * wo, 3);
            let mut d = vec![MaybeUninit::new(f32::NAN); h * w];
            plane_grad(&g, &idx, w, &mut d);
            let mut d_s = vec![MaybeUninit::new(f32::NAN); h * w];
            for oy in 0..ho {
                let (top, rest) = d_s[2 * oy * w..].split_at_mut(w);
                let (gr, ir) = (&g[oy * wo..(oy + 1) * wo], &idx[oy * wo..(oy + 1) * wo]);
                grad_rows(gr, ir, top, &mut rest[..w], 0);
            }
            for v in &mut d_s[2 * ho * w..] {
                v.write(0.0);
            }
            assert_eq!(finish(d), finish(d_s), "{h}x{w} backward");
        }
        assert!(seen_none && seen_win);
    }
}
