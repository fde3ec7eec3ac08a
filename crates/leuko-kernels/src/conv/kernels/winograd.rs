//! Winograd F(2x2, 3x3) kernels for 3x3 "same" convolutions: output, input gradient and weight
//! gradient.
//!
//! A direct 3x3 convolution spends 9 multiply-adds per output position, input channel and output
//! channel. Winograd's minimal filtering algorithm computes a 2x2 output tile from a 4x4 input
//! tile with 16 products instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016):
//!
//! ```text
//! Y = Aᵀ [ Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! with `g` the 3x3 kernel, `d` the 4x4 input tile and the F(2, 3) matrices below, whose entries
//! are 0, ±1 and ±1/2, so the transforms lose no precision worth mentioning in `f32` (the tests
//! compare with burn's convolution at the same tolerance as the direct kernels). After the
//! transforms, the channel sum for each of the 16 tile positions `ab` is a 1x1 convolution over
//! "tile planes", which runs on the direct kernels' 1x1 register block; the weight gradient's
//! sums run on their dot-product block. That is 2.25x fewer multiply-adds in all three products;
//! the transforms are additions over a few times the data, so the layers with few channels (the
//! network's first, with 3 input channels) keep the direct kernels ([`applies`]).
//!
//! # Layout
//!
//! Tiles are numbered row-major over the output: tile `(R, t)` covers output rows `2R, 2R + 1`
//! and columns `2t, 2t + 1` (the last row or column of tiles may hang over an odd-sized image: its
//! outputs there are computed from zeros and dropped). A task handles the tile rows of one band of
//! one image; its transformed data is `[16][channels][plane]`, `plane` floats per channel holding
//! the band's tiles in order, zero after the last one so that whole register blocks may run past.
//!
//! The input transform works row by row: each padded input row is split into its even and odd
//! columns and transformed along the row (`d B`, once per input row even though consecutive tile
//! rows share two), then four such rows are combined down the columns (`Bᵀ ·`). The output
//! transform runs the other way and interleaves the two columns of each tile back.
//!
//! Gradients: the input gradient is this same forward convolution of the output gradient with
//! the transposed, flipped kernel. The weight gradient of `U = G g Gᵀ` is
//! `dU = Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)` per channel pair and `dg = Gᵀ dU G`.
//!
//! Sums over tiles and channels run in a fixed order per task and the weight gradient is reduced
//! over fixed chunks of tasks, so, as with the direct kernels, results do not depend on thread
//! count or scheduling.

use rayon::prelude::*;

use super::super::ConvShape;
use super::{
    apply_epilogue, avx, output_buffer, prefetch, sum_over_chunks, with_scratch, Epilogue, Grads,
    Needs, SharedOut, MO, NJ, STRIP,
};

/// Transformed values per tile (4x4).
const AB: usize = 16;

/// Smallest channel count (input and output) for which the transforms pay for themselves.
///
/// With `c` channels on the other side, each transformed value feeds `c` multiply-adds; at 3
/// input channels (the first layer) the transforms would cost more than the 2.25x fewer products
/// save.
const MIN_CHANNELS: usize = 8;

/// Target working set of one task (transformed input and products, in floats x 4 bytes), sized
/// to stay in a 512 KiB per-core L2 cache with room for the weights.
const BAND_BYTES: usize = 640 * 1024;

/// Whether the Winograd kernels handle `shape` (3x3 with enough channels on both sides).
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.k == 3 && shape.c_in >= MIN_CHANNELS && shape.c_out >= MIN_CHANNELS
}

/// Tile geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    h: usize,
    w: usize,
    /// Tiles per row: ⌈w / 2⌉.
    tw: usize,
    /// Rows of tiles: ⌈h / 2⌉.
    th: usize,
    /// Tile rows per band (the last band may have fewer).
    rows: usize,
    /// Floats per channel of a transformed band: its tiles rounded up to whole register strips.
    plane: usize,
}

impl Tiles {
    /// Geometry for `shape` with bands sized for `channels` transformed planes per task.
    fn new(shape: &ConvShape, channels: usize) -> Self {
        let (h, w) = (shape.h, shape.w);
        let (tw, th) = (w.div_ceil(2), h.div_ceil(2));
        let per_row = AB * channels.max(1) * tw * core::mem::size_of::<f32>();
        let max_rows = (BAND_BYTES / per_row).clamp(1, th);
        let rows = th.div_ceil(th.div_ceil(max_rows));
        Self {
            h,
            w,
            tw,
            th,
            rows,
            plane: (rows * tw).div_ceil(STRIP) * STRIP,
        }
    }

    fn bands(&self) -> usize {
        self.th.div_ceil(self.rows)
    }

    /// First tile row and tile-row count of band `b`.
    fn band(&self, b: usize) -> (usize, usize) {
        let r0 = b * self.rows;
        (r0, self.rows.min(self.th - r0))
    }

    /// Scratch floats of the transforms: the even / odd columns of a band's padded input rows
    /// ([`Tiles::transform_input`]), or of two output rows ([`Tiles::transform_output_grad`]).
    fn row_scratch(&self) -> usize {
        2 * (2 * self.rows + 2) * (self.tw + 1)
    }

    /// Transforms tile rows `r0 .. r0 + rn` of the `channels` planes of one image (`src`,
    /// `[channels][h][w]`) into `dst` (`[16][planes][plane]`): `Bᵀ d B` for every tile.
    /// Planes `channels .. planes` are zero. `rows` is scratch of [`Tiles::row_scratch`].
    ///
    /// # Safety
    /// AVX2 and FMA available (compiled for them: 8-wide rather than 4-wide loops).
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    unsafe fn transform_input(
        &self,
        src: &[f32],
        channels: usize,
        planes: usize,
        r0: usize,
        rn: usize,
        dst: &mut [f32],
        rows: &mut [f32],
    ) {
        let (h, w, tw, plane) = (self.h, self.w, self.tw, self.plane);
        let prow = 2 * rn + 2;
        let split = &mut rows[..2 * prow * (tw + 1)];
        let used = rn * tw;
        for c in 0..planes {
            if c >= channels {
                zero_from(dst, planes, plane, c, 0);
                continue;
            }
            let img = &src[c * h * w..(c + 1) * h * w];
            let next = (c + 1 < channels).then(|| &src[(c + 1) * h * w..(c + 2) * h * w]);
            // Even / odd columns of padded rows 2 r0 .. 2 (r0 + rn) + 2 (padded row j is image
            // row j - 1, padded column j image column j - 1, so the padded even columns are the
            // image's odd ones shifted by one): row j at `split[2j (tw + 1)..]`, odd after even.
            for (j, eo) in split.chunks_exact_mut(2 * (tw + 1)).enumerate() {
                let (even, odd) = eo.split_at_mut(tw + 1);
                let y = (2 * r0 + j).wrapping_sub(1);
                if y < h {
                    if let Some(next) = next {
                        prefetch(next, y..y + 1, w);
                    }
                    even[0] = 0.0;
                    deinterleave(&img[y * w..(y + 1) * w], odd, &mut even[1..]);
                } else {
                    even.fill(0.0);
                    odd.fill(0.0);
                }
            }
            let split = &*split;
            for r in 0..rn {
                let row = |i: usize| &split[2 * (2 * r + i) * (tw + 1)..][..2 * (tw + 1)];
                let rows4: [&[f32]; 4] = core::array::from_fn(row);
                let base = c * plane + r * tw;
                let stride = planes * plane;
                let full = tw / 8 * 8;
                #[cfg(target_arch = "x86_64")]
                for t in (0..full).step_by(8) {
                    // SAFETY: AVX2 available (caller's contract); each row holds tw + 1 even
                    // and tw + 1 odd columns, so tiles t .. t + 8 ≤ tw read inside them; the 16
                    // destinations `stride` apart hold tw floats from `base` each.
                    unsafe {
                        let e = rows4.map(|d| d.as_ptr().add(t));
                        let o = rows4.map(|d| d.as_ptr().add(tw + 1 + t));
                        simd::input_tiles(e, o, dst.as_mut_ptr().add(base + t), stride);
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                let full = 0;
                for t in full..tw {
                    let d = |i: usize| {
                        let (e, o) = rows4[i].split_at(tw + 1);
                        [e[t], o[t], e[t + 1], o[t + 1]]
                    };
                    for (ab, v) in input_tile([d(0), d(1), d(2), d(3)]).into_iter().enumerate() {
                        dst[base + ab * stride + t] = v;
                    }
                }
            }
            zero_from(dst, planes, plane, c, used);
        }
    }

    /// Transforms the output gradient of tile rows `r0 .. r0 + rn` of one image (`dy`,
    /// `[channels][h][w]`) into `dst` (`[16][planes][plane]`): `A dY Aᵀ` for every tile, zero
    /// where the tile hangs over the image and for planes `channels .. planes`. `tmp` is scratch
    /// of [`Tiles::row_scratch`].
    ///
    /// # Safety
    /// AVX2 and FMA available.
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    unsafe fn transform_output_grad(
        &self,
        dy: &[f32],
        channels: usize,
        planes: usize,
        r0: usize,
        rn: usize,
        dst: &mut [f32],
        tmp: &mut [f32],
    ) {
        let (h, w, tw, plane) = (self.h, self.w, self.tw, self.plane);
        let used = rn * tw;
        let (e0, rest) = tmp.split_at_mut(tw);
        let (o0, rest) = rest.split_at_mut(tw);
        let (e1, rest) = rest.split_at_mut(tw);
        let o1 = &mut rest[..tw];
        let stride = planes * plane;
        for c in 0..planes {
            if c >= channels {
                zero_from(dst, planes, plane, c, 0);
                continue;
            }
            let img = &dy[c * h * w..(c + 1) * h * w];
            let next = (c + 1 < channels).then(|| &dy[(c + 1) * h * w..(c + 2) * h * w]);
            for r in 0..rn {
                // Even / odd columns of output rows 2R and 2R + 1 (zero beyond the image):
                // for tile t, `e0[t] = dY[0][0]`, `o0[t] = dY[0][1]`, `e1[t] = dY[1][0]`,
                // `o1[t] = dY[1][1]`.
                let y0 = 2 * (r0 + r);
                for (y, e, o) in [(y0, &mut *e0, &mut *o0), (y0 + 1, &mut *e1, &mut *o1)] {
                    if y < h {
                        if let Some(next) = next {
                            prefetch(next, y..y + 1, w);
                        }
                        deinterleave(&img[y * w..(y + 1) * w], e, o);
                    } else {
                        e.fill(0.0);
                        o.fill(0.0);
                    }
                }
                let base = c * plane + r * tw;
                let full = tw / 8 * 8;
                #[cfg(target_arch = "x86_64")]
                for t in (0..full).step_by(8) {
                    // SAFETY: AVX2 available (caller's contract); tiles t .. t + 8 ≤ tw of the
                    // four rows of tw floats; the 16 destinations `stride` apart hold tw floats
                    // from `base` each.
                    unsafe {
                        let src = [&*e0, &*o0, &*e1, &*o1].map(|v| v.as_ptr().add(t));
                        simd::output_grad_tiles(src, dst.as_mut_ptr().add(base + t), stride);
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                let full = 0;
                for t in full..tw {
                    let tile = output_grad_tile([e0[t], o0[t], e1[t], o1[t]]);
                    for (ab, v) in tile.into_iter().enumerate() {
                        dst[base + ab * stride + t] = v;
                    }
                }
            }
            zero_from(dst, planes, plane, c, used);
        }
    }

    /// Output transform `Aᵀ M A` of one channel's products (`m`: its 16 planes, `stride` floats
    /// apart) for tile rows `r0 .. r0 + rn`, plus `bias`, written to output rows of `out`
    /// (`[h][w]` of that channel).
    ///
    /// # Safety
    /// AVX2 and FMA available; `out` valid for writes of the rows `2 r0 .. min(2 (r0 + rn), h)` of a `[h][w]` plane, and
    /// no other thread writes them meanwhile.
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    unsafe fn transform_output(
        &self,
        m: &[f32],
        stride: usize,
        r0: usize,
        rn: usize,
        bias: f32,
        out: *mut f32,
    ) {
        let (h, w, tw) = (self.h, self.w, self.tw);
        // Tiles whose four outputs all lie in the image, in whole groups of 8 on the fast path.
        let full_cols = w / 2;
        for r in 0..rn {
            let y0 = 2 * (r0 + r);
            let both = y0 + 1 < h;
            let mp = m[r * tw..].as_ptr();
            // SAFETY (row pointers): rows y0 and, when `both`, y0 + 1 lie in the plane and are
            // this task's to write (caller's contract).
            let row0 = unsafe { out.add(y0 * w) };
            let row1 = unsafe { out.add((y0 + 1) * w) };
            let mut t = 0;
            #[cfg(target_arch = "x86_64")]
            if both {
                while t + 8 <= full_cols {
                    // SAFETY: AVX2 available (caller's contract); 16 planes `stride` apart hold
                    // the tiles t .. t + 8 < tw; columns 2t .. 2t + 16 ≤ w of both rows.
                    unsafe {
                        simd::output_tiles(
                            mp.add(t),
                            stride,
                            bias,
                            row0.add(2 * t),
                            row1.add(2 * t),
                        )
                    };
                    t += 8;
                }
            }
            for t in t..tw {
                let v: [f32; AB] = core::array::from_fn(|ab| m[ab * stride + r * tw + t]);
                let [a, b, c, d] = output_tile(v, bias);
                let x = 2 * t;
                // SAFETY: as above, each write checked against the image's size.
                unsafe {
                    *row0.add(x) = a;
                    if x + 1 < w {
                        *row0.add(x + 1) = b;
                    }
                    if both {
                        *row1.add(x) = c;
                        if x + 1 < w {
                            *row1.add(x + 1) = d;
                        }
                    }
                }
            }
        }
    }
}

/// Zeroes channel `c`'s 16 planes of a transformed band (`[16][planes][plane]`) from tile
/// `from` on: a padding channel entirely, otherwise past the band's last tile, so that whole
/// register blocks may run over them.
fn zero_from(dst: &mut [f32], planes: usize, plane: usize, c: usize, from: usize) {
    for ab in 0..AB {
        dst[(ab * planes + c) * plane + from..][..plane - from].fill(0.0);
    }
}

/// `Bᵀ d B` of one 4x4 tile `d[i][j]` (row i, column j), as `[a * 4 + b]`.
fn input_tile(d: [[f32; 4]; 4]) -> [f32; AB] {
    let hrow = |[d0, d1, d2, d3]: [f32; 4]| [d0 - d2, d1 + d2, d2 - d1, d1 - d3];
    let hh = d.map(hrow);
    core::array::from_fn(|ab| {
        let b = ab % 4;
        match ab / 4 {
            0 => hh[0][b] - hh[2][b],
            1 => hh[1][b] + hh[2][b],
            2 => hh[2][b] - hh[1][b],
            _ => hh[1][b] - hh[3][b],
        }
    })
}

/// `A dY Aᵀ` of one tile's output gradient `[y00, y01, y10, y11]`, as `[a * 4 + b]`.
fn output_grad_tile([y00, y01, y10, y11]: [f32; 4]) -> [f32; AB] {
    // Rows: R[a][j] = Σ_i A[a][i] dY[i][j], A = [1 0; 1 1; 1 -1; 0 -1]; then columns.
    let rows = [
        [y00, y01],
        [y00 + y10, y01 + y11],
        [y00 - y10, y01 - y11],
        [-y10, -y11],
    ];
    core::array::from_fn(|ab| {
        let [r0, r1] = rows[ab / 4];
        match ab % 4 {
            0 => r0,
            1 => r0 + r1,
            2 => r0 - r1,
            _ => -r1,
        }
    })
}

/// `Aᵀ M A + bias` of one tile's 16 products: outputs `[y00, y01, y10, y11]`.
fn output_tile(m: [f32; AB], bias: f32) -> [f32; 4] {
    let pa = |a: usize| {
        let (m0, m1, m2, m3) = (m[a * 4], m[a * 4 + 1], m[a * 4 + 2], m[a * 4 + 3]);
        (m0 + m1 + m2, m1 - m2 - m3)
    };
    let (p0, p1, p2, p3) = (pa(0), pa(1), pa(2), pa(3));
    [
        p0.0 + p1.0 + p2.0 + bias,
        p0.1 + p1.1 + p2.1 + bias,
        p1.0 - p2.0 - p3.0 + bias,
        p1.1 - p2.1 - p3.1 + bias,
    ]
}

/// Splits `row` into its even and odd columns, `even[t] = row[2t]` and `odd[t] = row[2t + 1]`,
/// zero beyond the row (`even` and `odd` at least `⌈len / 2⌉` long).
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let pairs = row.len() / 2;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernels only run where AVX2 is available (see `super::available`).
    let done = unsafe { simd::deinterleave(row, even, odd) };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for t in done..pairs {
        even[t] = row[2 * t];
        odd[t] = row[2 * t + 1];
    }
    even[pairs..].fill(0.0);
    odd[pairs..].fill(0.0);
    if row.len() % 2 == 1 {
        even[pairs] = row[row.len() - 1];
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! AVX2 even / odd column shuffles (the compiler leaves these strided loops scalar).
    //!
    //! The tile functions are `#[inline(always)]` rather than `#[target_feature]`: they run 8
    //! tiles per call inside the transforms, which are compiled for AVX2 themselves, and as
    //! separate functions the calls' register saves and restores took about a fifth of their
    //! time (perf annotate). Inlined there, their intrinsics compile for AVX2 too.

    use core::arch::x86_64::*;

    /// [`super::deinterleave`] for whole blocks of 16 floats; returns the pairs done.
    ///
    /// # Safety
    /// AVX2 available.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
        let blocks = (row.len() / 16).min(even.len() / 8).min(odd.len() / 8);
        for i in 0..blocks {
            // SAFETY: i < blocks bounds the 16 floats read and the 8 + 8 written.
            unsafe {
                let v0 = _mm256_loadu_ps(row.as_ptr().add(16 * i));
                let v1 = _mm256_loadu_ps(row.as_ptr().add(16 * i + 8));
                // [v0_0 v0_2 v1_0 v1_2 | v0_4 v0_6 v1_4 v1_6], then the 64-bit pairs reordered.
                let e = _mm256_shuffle_ps::<0b10_00_10_00>(v0, v1);
                let o = _mm256_shuffle_ps::<0b11_01_11_01>(v0, v1);
                let e =
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
                let o =
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
                _mm256_storeu_ps(even.as_mut_ptr().add(8 * i), e);
                _mm256_storeu_ps(odd.as_mut_ptr().add(8 * i), o);
            }
        }
        8 * blocks
    }

    /// [`super::input_tile`] for 8 consecutive tiles: padded row i's even columns from `e[i]`,
    /// its odd ones from `o[i]` (tile k reads `e[i][k]`, `o[i][k]`, `e[i][k + 1]`, `o[i][k + 1]`);
    /// value `ab` of the 8 tiles goes to `out + ab * stride`.
    ///
    /// # Safety
    /// AVX2 available; each `e[i]`, `o[i]` readable for 9 floats; the 16 destinations writable
    /// for 8.
    #[inline(always)]
    pub(super) unsafe fn input_tiles(
        e: [*const f32; 4],
        o: [*const f32; 4],
        out: *mut f32,
        stride: usize,
    ) {
        // SAFETY: reads and writes as the contract states.
        unsafe {
            let hrow = |i: usize| {
                let d0 = _mm256_loadu_ps(e[i]);
                let d1 = _mm256_loadu_ps(o[i]);
                let d2 = _mm256_loadu_ps(e[i].add(1));
                let d3 = _mm256_loadu_ps(o[i].add(1));
                [
                    _mm256_sub_ps(d0, d2),
                    _mm256_add_ps(d1, d2),
                    _mm256_sub_ps(d2, d1),
                    _mm256_sub_ps(d1, d3),
                ]
            };
            let (h0, h1, h2, h3) = (hrow(0), hrow(1), hrow(2), hrow(3));
            for b in 0..4 {
                _mm256_storeu_ps(out.add(b * stride), _mm256_sub_ps(h0[b], h2[b]));
                _mm256_storeu_ps(out.add((4 + b) * stride), _mm256_add_ps(h1[b], h2[b]));
                _mm256_storeu_ps(out.add((8 + b) * stride), _mm256_sub_ps(h2[b], h1[b]));
                _mm256_storeu_ps(out.add((12 + b) * stride), _mm256_sub_ps(h1[b], h3[b]));
            }
        }
    }

    /// [`super::output_grad_tile`] for 8 consecutive tiles: `src` = the tiles' dY[0][0],
    /// dY[0][1], dY[1][0], dY[1][1]; value `ab` goes to `out + ab * stride`.
    ///
    /// # Safety
    /// AVX2 available; the 4 sources readable for 8 floats, the 16 destinations writable for 8.
    #[inline(always)]
    pub(super) unsafe fn output_grad_tiles(src: [*const f32; 4], out: *mut f32, stride: usize) {
        // SAFETY: reads and writes as the contract states.
        unsafe {
            let [y00, y01, y10, y11] = src.map(|p| _mm256_loadu_ps(p));
            let zero = _mm256_setzero_ps();
            let rows = [
                [y00, y01],
                [_mm256_add_ps(y00, y10), _mm256_add_ps(y01, y11)],
                [_mm256_sub_ps(y00, y10), _mm256_sub_ps(y01, y11)],
                [_mm256_sub_ps(zero, y10), _mm256_sub_ps(zero, y11)],
            ];
            for (a, [r0, r1]) in rows.into_iter().enumerate() {
                _mm256_storeu_ps(out.add(4 * a * stride), r0);
                _mm256_storeu_ps(out.add((4 * a + 1) * stride), _mm256_add_ps(r0, r1));
                _mm256_storeu_ps(out.add((4 * a + 2) * stride), _mm256_sub_ps(r0, r1));
                _mm256_storeu_ps(out.add((4 * a + 3) * stride), _mm256_sub_ps(zero, r1));
            }
        }
    }

    /// [`super::output_tile`] for 8 consecutive tiles whose products start at `m` (value `ab`
    /// at `m + ab * stride`), written interleaved to 16 columns of `row0` and of `row1`.
    ///
    /// # Safety
    /// AVX2 available; the 16 sources readable for 8 floats; `row0` and `row1` writable for 16.
    #[inline(always)]
    pub(super) unsafe fn output_tiles(
        m: *const f32,
        stride: usize,
        bias: f32,
        row0: *mut f32,
        row1: *mut f32,
    ) {
        // SAFETY: reads and writes as the contract states.
        unsafe {
            let ld = |ab: usize| _mm256_loadu_ps(m.add(ab * stride));
            let pa = |a: usize| {
                let (m0, m1, m2, m3) = (ld(a * 4), ld(a * 4 + 1), ld(a * 4 + 2), ld(a * 4 + 3));
                let m12 = _mm256_add_ps(m1, m2);
                (
                    _mm256_add_ps(m0, m12),
                    _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3),
                )
            };
            let (p0, p1, p2, p3) = (pa(0), pa(1), pa(2), pa(3));
            let b = _mm256_set1_ps(bias);
            let y00 = _mm256_add_ps(_mm256_add_ps(p0.0, _mm256_add_ps(p1.0, p2.0)), b);
            let y01 = _mm256_add_ps(_mm256_add_ps(p0.1, _mm256_add_ps(p1.1, p2.1)), b);
            let y10 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(p1.0, p2.0), p3.0), b);
            let y11 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(p1.1, p2.1), p3.1), b);
            for (row, e, o) in [(row0, y00, y01), (row1, y10, y11)] {
                let lo = _mm256_unpacklo_ps(e, o);
                let hi = _mm256_unpackhi_ps(e, o);
                _mm256_storeu_ps(row, _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(row.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
            }
        }
    }
}

/// F(2, 3)'s kernel transform G (4x3).
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// Packs weights `[c_out][c_in][3][3]` as transformed kernels `G g Gᵀ` for the 1x1 register
/// block: `[16][c_out / MO][c_in][MO]`, zero for the padding output channels. With
/// `transpose_flip`, the kernel of the input gradient, `g'[ci][co] = flip(g[co][ci])`.
fn pack_weights(weight: &[f32], c_out: usize, c_in: usize, transpose_flip: bool) -> Vec<f32> {
    let (rows, cols) = if transpose_flip {
        (c_in, c_out)
    } else {
        (c_out, c_in)
    };
    let blocks = rows.div_ceil(MO);
    let mut packed = vec![0.0; AB * blocks * cols * MO];
    // In parallel over (tile position, block of rows): the main thread ran this alone while the
    // pool's threads waited.
    packed
        .par_chunks_mut(cols * MO)
        .enumerate()
        .for_each(|(chunk, out)| {
            let (a, b, blk) = (chunk / blocks / 4, chunk / blocks % 4, chunk % blocks);
            for (c, lanes) in out.chunks_exact_mut(MO).enumerate() {
                for (k, lane) in lanes.iter_mut().enumerate() {
                    let r = blk * MO + k;
                    if r >= rows {
                        continue;
                    }
                    let g = |i: usize, j: usize| {
                        if transpose_flip {
                            weight[(c * c_in + r) * 9 + 8 - (i * 3 + j)]
                        } else {
                            weight[(r * c_in + c) * 9 + i * 3 + j]
                        }
                    };
                    let mut u = 0.0;
                    for (i, gai) in G[a].iter().enumerate() {
                        for (j, gbj) in G[b].iter().enumerate() {
                            u += gai * g(i, j) * gbj;
                        }
                    }
                    *lane = u;
                }
            }
        });
    packed
}

/// The 1x1 products of one band: for each tile position `ab`, `m[ab][co] = Σ_c u[ab][co][c] *
/// v[ab][c]` over `c_src` transformed planes of `v` (`[16][c_src][plane]`) into `m`
/// (`[16][c_dst_pad][plane]`), on the first `rn * tw` tiles rounded up to strips.
fn products(
    geo: &Tiles,
    v: &[f32],
    c_src: usize,
    packed: &[f32],
    c_dst_pad: usize,
    rn: usize,
    m: &mut [f32],
) {
    let plane = geo.plane;
    let strips = (rn * geo.tw).div_ceil(STRIP);
    let blocks = c_dst_pad / MO;
    let zero = [0.0f32; MO];
    assert!(c_src > 0 && strips * STRIP <= plane);
    assert!(v.len() >= AB * c_src * plane && m.len() >= AB * c_dst_pad * plane);
    assert!(packed.len() >= AB * blocks * c_src * MO);
    for ab in 0..AB {
        let vab = &v[ab * c_src * plane..(ab + 1) * c_src * plane];
        for blk in 0..blocks {
            let wblk = &packed[(ab * blocks + blk) * c_src * MO..][..c_src * MO];
            let out = &mut m[(ab * c_dst_pad + blk * MO) * plane..][..MO * plane];
            for s in 0..strips {
                // SAFETY: kernels available (checked before any kernel call, see
                // `super::super::flex_shape`); reads c_src planes of `plane` floats from strip
                // start s * STRIP for STRIP floats (≤ plane, asserted), c_src * MO weights and MO
                // biases; writes MO rows of STRIP floats `plane` apart inside `out`.
                unsafe {
                    avx::conv1_strip(
                        vab.as_ptr().add(s * STRIP),
                        plane,
                        c_src,
                        wblk.as_ptr(),
                        zero.as_ptr(),
                        out.as_mut_ptr().add(s * STRIP),
                        plane,
                    );
                }
            }
        }
    }
}

/// Convolves `src [n][c_src][h][w]` with Winograd-packed weights (see [`pack_weights`]) into a
/// new `[n][c_dst][h][w]` buffer, adding `bias` (`c_dst` entries) or nothing.
fn conv(
    src: &[f32],
    c_src: usize,
    c_dst: usize,
    packed: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    epilogue: Epilogue,
) -> Vec<f32> {
    let c_dst_pad = c_dst.next_multiple_of(MO);
    let geo = Tiles::new(shape, c_src + c_dst_pad);
    let (n, h, w) = (shape.n, shape.h, shape.w);
    let mut out = output_buffer(n * c_dst * h * w);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let bands = geo.bands();
    (0..n * bands).into_par_iter().for_each(|task| {
        let (img, band) = (task / bands, task % bands);
        let (r0, rn) = geo.band(band);
        let src_img = &src[img * c_src * h * w..(img + 1) * c_src * h * w];
        let (a, b) = (AB * c_src * geo.plane, AB * c_dst_pad * geo.plane);
        with_scratch(a, b, geo.row_scratch(), |vb, mb, rows| {
            // SAFETY: the kernels run only where AVX2 and FMA are (see `super::available`).
            unsafe { geo.transform_input(src_img, c_src, c_src, r0, rn, vb, rows) };
            products(&geo, vb, c_src, packed, c_dst_pad, rn, mb);
            let stride = c_dst_pad * geo.plane;
            for co in 0..c_dst {
                let b = bias.map_or(0.0, |b| b[co]);
                // SAFETY: AVX2 and FMA available (see `super::available`); the plane of
                // (img, co) lies in `out`; this task alone writes its rows
                // 2 r0 .. 2 (r0 + rn) (bands partition the tile rows of each image).
                unsafe {
                    geo.transform_output(
                        &mb[co * geo.plane..],
                        stride,
                        r0,
                        rn,
                        b,
                        out_ptr.at((img * c_dst + co) * h * w),
                    );
                }
                let rows = 2 * r0..(2 * (r0 + rn)).min(h);
                // SAFETY: the rows just written, this task's alone (as above).
                unsafe {
                    let at = ((img * c_dst + co) * h + rows.start) * w;
                    apply_epilogue(epilogue, &out_ptr, at, rows.len() * w);
                }
            }
        });
    });
    // SAFETY: the tasks cover every (image, band) pair and each wrote all `c_dst` channels of
    // its rows in full, so all `n * c_dst * h * w` elements are initialised.
    unsafe { out.set_len(n * c_dst * h * w) };
    out
}

/// Forward convolution (see [`applies`]): `x [n][c_in][h][w]`, `weight [c_out][c_in][3][3]`.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    epilogue: Epilogue,
) -> Vec<f32> {
    let packed = pack_weights(weight, shape.c_out, shape.c_in, false);
    conv(x, shape.c_in, shape.c_out, &packed, bias, shape, epilogue)
}

/// Gradients for the output gradient `dy [n][c_out][h][w]` (see [`applies`]).
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    needs: Needs,
) -> Grads {
    let (n, c_in, c_out, h, w) = (shape.n, shape.c_in, shape.c_out, shape.h, shape.w);
    let input = needs.input.then(|| {
        let packed = pack_weights(weight, c_out, c_in, true);
        conv(dy, c_out, c_in, &packed, None, shape, None)
    });
    let c_out_pad = c_out.next_multiple_of(MO);
    let x_planes = c_in.next_multiple_of(NJ);
    let (weight_grad, bias_grad) = if needs.weight || needs.bias {
        let geo = Tiles::new(shape, c_out_pad + x_planes);
        let bands = geo.bands();
        let tasks = n * bands;
        let blocked_len = AB * c_out_pad * x_planes;
        let one_task = |task: usize, du: &mut [f32], db: &mut [f32]| {
            let (img, band) = (task / bands, task % bands);
            let (r0, rn) = geo.band(band);
            let dy_img = &dy[img * c_out * h * w..(img + 1) * c_out * h * w];
            if needs.bias {
                let rows = 2 * r0..(2 * (r0 + rn)).min(h);
                for (co, acc) in db.iter_mut().enumerate() {
                    *acc += lane_sum(&dy_img[co * h * w + rows.start * w..][..rows.len() * w]);
                }
            }
            if !needs.weight {
                return;
            }
            let x_img = &x[img * c_in * h * w..(img + 1) * c_in * h * w];
            let (a, b) = (AB * c_out_pad * geo.plane, AB * x_planes * geo.plane);
            with_scratch(a, b, geo.row_scratch(), |gb, vb, rows| {
                // SAFETY: the kernels run only where AVX2 and FMA are (see `super::available`).
                unsafe {
                    geo.transform_output_grad(dy_img, c_out, c_out_pad, r0, rn, gb, rows);
                    geo.transform_input(x_img, c_in, x_planes, r0, rn, vb, rows);
                }
                weight_products(&geo, gb, c_out_pad, vb, x_planes, rn, du);
            });
        };
        let du_len = if needs.weight { blocked_len } else { 0 };
        let (du, db) = sum_over_chunks(tasks, du_len, c_out, one_task);
        (
            needs
                .weight
                .then(|| kernel_grad(&du, c_out, c_out_pad, c_in, x_planes)),
            needs.bias.then_some(db),
        )
    } else {
        (None, None)
    };
    Grads {
        input,
        weight: weight_grad,
        bias: bias_grad,
    }
}

/// Sum of `values` in eight interleaved lanes (vectorised; a fixed order).
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    lanes.iter().sum::<f32>() + tail
}

/// Adds one band's `dU[ab][co][c] += Σ_tiles dM[ab][co][tile] * V[ab][c][tile]` to `du`, kept in
/// the dot block's layout `[16][c_out_pad / MO][x_planes / NJ][MO][NJ]`.
fn weight_products(
    geo: &Tiles,
    gb: &[f32],
    c_out_pad: usize,
    vb: &[f32],
    x_planes: usize,
    rn: usize,
    du: &mut [f32],
) {
    let plane = geo.plane;
    let nvec = (rn * geo.tw).div_ceil(8);
    let (blocks, col_blocks) = (c_out_pad / MO, x_planes / NJ);
    assert!(nvec > 0 && 8 * nvec <= plane && x_planes % NJ == 0);
    assert!(gb.len() >= AB * c_out_pad * plane && vb.len() >= AB * x_planes * plane);
    assert!(du.len() >= AB * blocks * col_blocks * MO * NJ);
    for ab in 0..AB {
        for blk in 0..blocks {
            let dyp = gb[(ab * c_out_pad + blk * MO) * plane..].as_ptr();
            for cb in 0..col_blocks {
                let xp = vb[(ab * x_planes + cb * NJ) * plane..].as_ptr();
                let acc = &mut du[((ab * blocks + blk) * col_blocks + cb) * MO * NJ..][..MO * NJ];
                // SAFETY: kernels available (checked before any kernel call); MO rows of dM and
                // NJ planes of V, `plane` apart, each read for 8 * nvec ≤ plane floats inside
                // the buffers (asserted above); `acc` holds the MO * NJ floats written.
                unsafe {
                    avx::dot_block(dyp, plane, xp, plane, nvec, acc.as_mut_ptr());
                }
            }
        }
    }
}

/// The kernel gradient `dg = Gᵀ dU G` in burn's `[c_out][c_in][3][3]` layout, from `du` in the
/// layout of [`weight_products`].
fn kernel_grad(
    du: &[f32],
    c_out: usize,
    c_out_pad: usize,
    c_in: usize,
    x_planes: usize,
) -> Vec<f32> {
    let (blocks, col_blocks) = (c_out_pad / MO, x_planes / NJ);
    let at = |ab: usize, co: usize, ci: usize| {
        du[(((ab * blocks + co / MO) * col_blocks + ci / NJ) * MO + co % MO) * NJ + ci % NJ]
    };
    let mut dw = vec![0.0f32; c_out * c_in * 9];
    dw.par_chunks_mut(c_in * 9)
        .enumerate()
        .for_each(|(co, dw)| {
            for ci in 0..c_in {
                let u: [f32; AB] = core::array::from_fn(|ab| at(ab, co, ci));
                for i in 0..3 {
                    for j in 0..3 {
                        let mut g = 0.0;
                        for a in 0..4 {
                            for b in 0..4 {
                                g += G[a][i] * u[a * 4 + b] * G[b][j];
                            }
                        }
                        dw[ci * 9 + i * 3 + j] = g;
                    }
                }
            }
        });
    dw
}
