//! Band-tiled direct convolution kernels (x86-64 AVX2 + FMA), forward and backward.
//!
//! # Flattened bands
//!
//! A task handles the output rows `h0 .. h0 + r` of one image. Its input is copied into a
//! thread-local buffer, one *plane* of `in_len` floats per channel, laid out so that the
//! convolution needs no boundary tests:
//!
//! * 3x3, padding 1: rows of stride `wp = w + 1`; plane index `1 + pr * wp + c` holds input row
//!   `h0 - 1 + pr`, column `c`, for `pr` in `0 .. r + 2` (out-of-image rows are zero) and `c < w`;
//!   column `w` and index 0 are zero. Output position `q = rr * wp + c` (row `h0 + rr`) then
//!   reads tap `(kh, kw)` at plane index `q + kh * wp + kw`: the left neighbour of column 0 is the
//!   previous row's zero column. Positions with `c == w` are computed and discarded.
//! * 1x1, padding 0: `wp = w`, no halo, tap offset 0.
//!
//! Every kernel therefore works on contiguous position ranges with fixed tap offsets. Planes
//! carry zeroed slack at the end so that the last register block may run past the band.
//!
//! The input gradient is computed by the forward driver on the output gradient, with the
//! kernel transposed and flipped. The weight gradient reads the output gradient from the same
//! padded layout: output position `q` of a band sits at plane index `q + lead + halo * wp`,
//! and its discarded columns are zero there, so they add nothing to the dot products.

use std::cell::RefCell;

use rayon::prelude::*;

use super::ConvShape;

/// Output channels per register block.
const MO: usize = 4;
/// AVX vectors (8 positions each) per register block of the forward kernel.
const NV: usize = 3;
/// Positions per forward register block.
const STRIP: usize = NV * 8;
/// Weight-gradient columns (input channel x tap pairs) per register block.
const NJ: usize = 3;
/// Target size in bytes of one task's working set (input band, output band), well inside the
/// 512 KiB per-core L2 of the machines this was tuned on.
const BAND_BYTES: usize = 192 * 1024;

/// Whether this CPU can run the kernels (checked once; `false` off x86-64).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which gradients [`backward`] should compute.
#[derive(Clone, Copy, Debug)]
pub(super) struct Needs {
    pub input: bool,
    pub weight: bool,
    pub bias: bool,
}

/// Gradients computed by [`backward`], row-major, `None` where not requested.
#[derive(Debug, Default)]
pub(super) struct Grads {
    pub input: Option<Vec<f32>>,
    pub weight: Option<Vec<f32>>,
    pub bias: Option<Vec<f32>>,
}

/// Band geometry shared by all kernels of one convolution (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// Kernel size: 1 or 3.
    k: usize,
    h: usize,
    w: usize,
    /// Row stride of the flattened band.
    wp: usize,
    /// Zero floats before the first halo row (1 for 3x3 so column -1 of row 0 exists).
    lead: usize,
    /// Zero-padding rows above and below the image (= padding).
    halo: usize,
    /// Output rows per band (the last band may be shorter).
    rows: usize,
    /// Floats per output-band channel row: band positions rounded up to whole strips.
    out_len: usize,
    /// Floats per input-band plane, including the zeroed slack.
    in_len: usize,
}

impl Geometry {
    /// Geometry for `shape`, with bands sized so that `channels` planes of input and output
    /// stay within [`BAND_BYTES`].
    fn new(shape: &ConvShape, channels: usize) -> Self {
        let (k, h, w) = (shape.k, shape.h, shape.w);
        let (wp, lead, halo) = if k == 3 { (w + 1, 1, 1) } else { (w, 0, 0) };
        let per_row = channels.max(1) * wp * core::mem::size_of::<f32>();
        let rows = (BAND_BYTES / per_row).clamp(1, h);
        let out_len = (rows * wp).div_ceil(STRIP) * STRIP;
        let max_offset = (k - 1) * wp + (k - 1);
        let in_len = (lead + (rows + 2 * halo) * wp).max(out_len + max_offset + 8);
        Self {
            k,
            h,
            w,
            wp,
            lead,
            halo,
            rows,
            out_len,
            in_len: in_len.next_multiple_of(8),
        }
    }

    fn bands(&self) -> usize {
        self.h.div_ceil(self.rows)
    }

    /// First output row and row count of band `b`.
    fn band(&self, b: usize) -> (usize, usize) {
        let h0 = b * self.rows;
        (h0, self.rows.min(self.h - h0))
    }

    /// Tap offsets within a plane, tap-major as in burn's `[kh][kw]` weight layout.
    fn taps(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.k * self.k).map(|t| (t / self.k) * self.wp + t % self.k)
    }

    /// Copies rows `h0 - halo .. h0 + r + halo` of the `channels` planes of one image (`src`,
    /// `[channels][h][w]`) into `dst` (`channels` planes of `in_len`), zero padded; planes
    /// `channels .. planes` are zeroed entirely.
    fn pack(
        &self,
        src: &[f32],
        channels: usize,
        planes: usize,
        h0: usize,
        r: usize,
        dst: &mut [f32],
    ) {
        let (h, w, wp) = (self.h, self.w, self.wp);
        for (c, plane) in dst.chunks_exact_mut(self.in_len).take(planes).enumerate() {
            if c >= channels {
                plane.fill(0.0);
                continue;
            }
            let img = &src[c * h * w..(c + 1) * h * w];
            plane[..self.lead].fill(0.0);
            let rows_end = self.lead + (r + 2 * self.halo) * wp;
            for (pr, row) in plane[self.lead..rows_end].chunks_exact_mut(wp).enumerate() {
                // Image row of padded row `pr`; out of range above the image wraps to a huge value.
                let y = (h0 + pr).wrapping_sub(self.halo);
                if y < h {
                    row[..w].copy_from_slice(&img[y * w..(y + 1) * w]);
                } else {
                    row[..w].fill(0.0);
                }
                row[w..].fill(0.0);
            }
            plane[rows_end..].fill(0.0);
        }
    }
}

/// Per-thread scratch buffers, reused across tasks and calls so that steady-state training
/// allocates nothing but output tensors (fresh multi-megabyte buffers per call cost page faults).
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers resized to at least `a` and `b` floats.
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        if s.a.len() < a {
            s.a.resize(a, 0.0);
        }
        if s.b.len() < b {
            s.b.resize(b, 0.0);
        }
        f(&mut s.a[..a], &mut s.b[..b])
    })
}

/// A raw output pointer shared by tasks that write disjoint regions of one buffer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used by `conv_driver`, whose tasks write pairwise disjoint index sets
// (distinct (image, band) pairs) of a buffer that outlives the parallel loop.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element pointer at `offset` (a method, so closures capture the whole `Send` wrapper).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Packs weights `[c_out][c_in][t]` for the forward kernel: `[c_out/MO][c_in][t][MO]`,
/// zero-filled for the padding output channels. With `transpose_flip` it packs instead the
/// kernel of the input gradient, `w'[ci][co][t] = w[co][ci][taps - 1 - t]`.
fn pack_weights(
    weight: &[f32],
    c_out: usize,
    c_in: usize,
    taps: usize,
    transpose_flip: bool,
) -> Vec<f32> {
    let (rows, cols) = if transpose_flip {
        (c_in, c_out)
    } else {
        (c_out, c_in)
    };
    let blocks = rows.div_ceil(MO);
    let mut packed = vec![0.0; blocks * cols * taps * MO];
    for r in 0..rows {
        for c in 0..cols {
            for t in 0..taps {
                let v = if transpose_flip {
                    weight[(c * c_in + r) * taps + (taps - 1 - t)]
                } else {
                    weight[(r * c_in + c) * taps + t]
                };
                packed[(((r / MO) * cols + c) * taps + t) * MO + r % MO] = v;
            }
        }
    }
    packed
}

/// Forward convolution: `x [n][c_in][h][w]`, `weight [c_out][c_in][k][k]` → `[n][c_out][h][w]`.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
) -> Vec<f32> {
    let taps = shape.k * shape.k;
    let packed = pack_weights(weight, shape.c_out, shape.c_in, taps, false);
    let mut bias_padded = vec![0.0; shape.c_out.next_multiple_of(MO)];
    if let Some(b) = bias {
        bias_padded[..shape.c_out].copy_from_slice(b);
    }
    conv_driver(x, shape.c_in, shape.c_out, &packed, &bias_padded, shape)
}

/// Gradients of the convolution for the output gradient `dy [n][c_out][h][w]`.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    needs: Needs,
) -> Grads {
    let taps = shape.k * shape.k;
    let input = needs.input.then(|| {
        let packed = pack_weights(weight, shape.c_out, shape.c_in, taps, true);
        let zeros = vec![0.0; shape.c_in.next_multiple_of(MO)];
        conv_driver(dy, shape.c_out, shape.c_in, &packed, &zeros, shape)
    });
    let (weight_grad, bias_grad) = if needs.weight || needs.bias {
        let (dw, db) = weight_bias_grad(x, dy, shape, needs.weight);
        (needs.weight.then_some(dw), needs.bias.then_some(db))
    } else {
        (None, None)
    };
    Grads {
        input,
        weight: weight_grad,
        bias: bias_grad,
    }
}

/// Convolves `src [n][c_src][h][w]` with packed weights (see [`pack_weights`]) into a new
/// `[n][c_dst][h][w]` buffer; `bias` has `c_dst` rounded up to [`MO`] entries.
fn conv_driver(
    src: &[f32],
    c_src: usize,
    c_dst: usize,
    packed: &[f32],
    bias: &[f32],
    shape: &ConvShape,
) -> Vec<f32> {
    let c_dst_pad = c_dst.next_multiple_of(MO);
    let geo = Geometry::new(shape, c_src + c_dst_pad);
    let (n, h, w) = (shape.n, shape.h, shape.w);
    let mut out = vec![0.0f32; n * c_dst * h * w];
    let out_ptr = SharedOut(out.as_mut_ptr());
    let bands = geo.bands();
    (0..n * bands).into_par_iter().for_each(|task| {
        let (img, band) = (task / bands, task % bands);
        let (h0, r) = geo.band(band);
        let src_img = &src[img * c_src * h * w..(img + 1) * c_src * h * w];
        with_scratch(c_src * geo.in_len, c_dst_pad * geo.out_len, |xb, yb| {
            geo.pack(src_img, c_src, c_src, h0, r, xb);
            forward_band(&geo, xb, c_src, packed, bias, c_dst_pad, r, yb);
            for co in 0..c_dst {
                for rr in 0..r {
                    let from = &yb[co * geo.out_len + rr * geo.wp..][..w];
                    let at = ((img * c_dst + co) * h + h0 + rr) * w;
                    // SAFETY: `at .. at + w` lies in `out` (img < n, co < c_dst, h0 + rr < h), and
                    // (img, h0 + rr) identifies this task's rows, so no other task writes them.
                    unsafe {
                        std::ptr::copy_nonoverlapping(from.as_ptr(), out_ptr.at(at), w);
                    }
                }
            }
        });
    });
    out
}

/// Runs the forward register blocks over one packed band: `xb` has `c_src` planes, `yb` gets
/// `c_dst_pad` rows of `out_len`.
#[allow(clippy::too_many_arguments)]
fn forward_band(
    geo: &Geometry,
    xb: &[f32],
    c_src: usize,
    packed: &[f32],
    bias: &[f32],
    c_dst_pad: usize,
    r: usize,
    yb: &mut [f32],
) {
    let strips = (r * geo.wp).div_ceil(STRIP);
    let taps = geo.k * geo.k;
    debug_assert!(xb.len() >= c_src * geo.in_len && yb.len() >= c_dst_pad * geo.out_len);
    debug_assert!(strips * STRIP + (geo.k - 1) * (geo.wp + 1) <= geo.in_len);
    for blk in 0..c_dst_pad / MO {
        let wblk = &packed[blk * c_src * taps * MO..(blk + 1) * c_src * taps * MO];
        let bias4 = &bias[blk * MO..(blk + 1) * MO];
        let out = &mut yb[blk * MO * geo.out_len..(blk + 1) * MO * geo.out_len];
        for s in 0..strips {
            // SAFETY: `available()` was checked before any kernel call (see `super::flex_shape`);
            // the debug assertions above bound every load (strip start + tap offset + STRIP
            // ≤ in_len within each of the c_src planes) and store (s * STRIP + STRIP ≤ out_len).
            unsafe {
                let x = xb.as_ptr().add(s * STRIP);
                let y = out.as_mut_ptr().add(s * STRIP);
                if geo.k == 3 {
                    avx::conv_strip::<3>(
                        x,
                        geo.in_len,
                        geo.wp,
                        c_src,
                        wblk.as_ptr(),
                        bias4.as_ptr(),
                        y,
                        geo.out_len,
                    );
                } else {
                    avx::conv_strip::<1>(
                        x,
                        geo.in_len,
                        geo.wp,
                        c_src,
                        wblk.as_ptr(),
                        bias4.as_ptr(),
                        y,
                        geo.out_len,
                    );
                }
            }
        }
    }
}

/// Weight gradient `[c_out][c_in][k][k]` (when `need_weight`) and bias gradient `[c_out]`.
fn weight_bias_grad(
    x: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    need_weight: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (n, c_in, c_out, h, w) = (shape.n, shape.c_in, shape.c_out, shape.h, shape.w);
    let c_out_pad = c_out.next_multiple_of(MO);
    let geo = Geometry::new(shape, c_in + c_out_pad);
    let taps = shape.k * shape.k;
    let cols = c_in * taps;
    let tap_offsets: Vec<usize> = geo.taps().collect();
    let bands = geo.bands();
    // Output position q of a band lives at this index of the packed output-gradient plane.
    let shift = geo.lead + geo.halo * geo.wp;
    let zero = || (vec![0.0f32; c_out * cols], vec![0.0f32; c_out]);
    (0..n * bands)
        .into_par_iter()
        .fold(zero, |(mut dw, mut db), task| {
            let (img, band) = (task / bands, task % bands);
            let (h0, r) = geo.band(band);
            let dy_img = &dy[img * c_out * h * w..(img + 1) * c_out * h * w];
            for (co, acc) in db.iter_mut().enumerate() {
                let rows = &dy_img[(co * h + h0) * w..(co * h + h0 + r) * w];
                *acc += rows.iter().sum::<f32>();
            }
            if !need_weight {
                return (dw, db);
            }
            let x_img = &x[img * c_in * h * w..(img + 1) * c_in * h * w];
            with_scratch(c_in * geo.in_len, c_out_pad * geo.in_len, |xb, db_buf| {
                geo.pack(x_img, c_in, c_in, h0, r, xb);
                geo.pack(dy_img, c_out, c_out_pad, h0, r, db_buf);
                let npos = r * geo.wp;
                let mut block = [[0.0f32; NJ]; MO];
                for blk in 0..c_out_pad / MO {
                    let dyp = db_buf[blk * MO * geo.in_len + shift..].as_ptr();
                    let mut col = 0;
                    while col < cols {
                        let nj = NJ.min(cols - col);
                        // Columns of one block: consecutive taps of one input channel (3x3), or
                        // consecutive input channels (1x1); either way a constant pointer stride.
                        let (ci, t) = (col / taps, col % taps);
                        let xp = xb[ci * geo.in_len + tap_offsets[t]..].as_ptr();
                        let col_stride = if taps == 1 { geo.in_len } else { 1 };
                        let same_row = taps == 1 || (t % geo.k) + nj <= geo.k;
                        debug_assert!(same_row, "3x3 column blocks stay within one kernel row");
                        // SAFETY: kernels available (checked by the caller); dy rows: MO planes
                        // of in_len from `shift`, read up to npos rounded up to 8 (masked past
                        // npos); x columns: reads end at tap offset + npos + 8 + (nj - 1) *
                        // col_stride, inside the c_in planes by construction of `in_len`.
                        unsafe {
                            match nj {
                                3 => avx::dot_block::<3>(
                                    dyp, geo.in_len, xp, col_stride, npos, &mut block,
                                ),
                                2 => avx::dot_block::<2>(
                                    dyp, geo.in_len, xp, col_stride, npos, &mut block,
                                ),
                                _ => avx::dot_block::<1>(
                                    dyp, geo.in_len, xp, col_stride, npos, &mut block,
                                ),
                            }
                        }
                        for (i, row) in block.iter().enumerate() {
                            let co = blk * MO + i;
                            if co < c_out {
                                for (j, v) in row.iter().take(nj).enumerate() {
                                    dw[co * cols + col + j] += v;
                                }
                            }
                        }
                        col += nj;
                    }
                }
            });
            (dw, db)
        })
        .reduce(zero, |(mut dw, mut db), (dw2, db2)| {
            dw.iter_mut().zip(&dw2).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(&db2).for_each(|(a, b)| *a += b);
            (dw, db)
        })
}

#[cfg(target_arch = "x86_64")]
mod avx {
    //! The AVX2 + FMA register blocks. Callers guarantee the CPU features and the bounds.

    use core::arch::x86_64::*;

    use super::{MO, NV};

    /// One forward register block: `MO` output rows x `NV * 8` positions.
    ///
    /// `y[i][p] = bias[i] + Σ_ci Σ_t w[ci][t][i] * x[ci * in_len + off(t) + p]` for
    /// `p < NV * 8`, with `off(kh * K + kw) = kh * wp + kw`; row `i` of `y` starts at
    /// `y + i * out_stride`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `x` must be readable for `c_in` planes of `in_len`
    /// floats up to offset `(K - 1) * (wp + 1) + NV * 8`, `w` for `c_in * K * K * MO` floats,
    /// `bias` for `MO`, and `y` writable for `MO` rows of `NV * 8`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_strip<const K: usize>(
        x: *const f32,
        in_len: usize,
        wp: usize,
        c_in: usize,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        out_stride: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MO];
        for (i, row) in acc.iter_mut().enumerate() {
            let b = _mm256_broadcast_ss(&*bias.add(i));
            *row = [b; NV];
        }
        for ci in 0..c_in {
            let xc = x.add(ci * in_len);
            let wc = w.add(ci * K * K * MO);
            for kh in 0..K {
                let xr = xc.add(kh * wp);
                for kw in 0..K {
                    let p = xr.add(kw);
                    let mut xv = [_mm256_setzero_ps(); NV];
                    for (v, xv) in xv.iter_mut().enumerate() {
                        *xv = _mm256_loadu_ps(p.add(8 * v));
                    }
                    let wt = wc.add((kh * K + kw) * MO);
                    for (i, row) in acc.iter_mut().enumerate() {
                        let b = _mm256_broadcast_ss(&*wt.add(i));
                        for (a, xv) in row.iter_mut().zip(xv) {
                            *a = _mm256_fmadd_ps(b, xv, *a);
                        }
                    }
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                _mm256_storeu_ps(y.add(i * out_stride + 8 * v), *a);
            }
        }
    }

    /// One weight-gradient register block: `out[i][j] = Σ_{q < npos} dy[i * dy_stride + q] *
    /// x[j * col_stride + q]` for `i < MO`, `j < J`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `dy` rows readable up to `npos` (the last partial
    /// vector is loaded masked), `x` columns readable up to `npos` rounded up to 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_block<const J: usize>(
        dy: *const f32,
        dy_stride: usize,
        x: *const f32,
        col_stride: usize,
        npos: usize,
        out: &mut [[f32; super::NJ]; MO],
    ) {
        let mut acc = [[_mm256_setzero_ps(); J]; MO];
        let full = npos / 8;
        for v in 0..full {
            let q = 8 * v;
            let mut xv = [_mm256_setzero_ps(); J];
            for (j, xv) in xv.iter_mut().enumerate() {
                *xv = _mm256_loadu_ps(x.add(j * col_stride + q));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let d = _mm256_loadu_ps(dy.add(i * dy_stride + q));
                for (a, xv) in row.iter_mut().zip(xv) {
                    *a = _mm256_fmadd_ps(d, xv, *a);
                }
            }
        }
        let rest = npos - 8 * full;
        if rest > 0 {
            let q = 8 * full;
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest as i32), lanes);
            let mut xv = [_mm256_setzero_ps(); J];
            for (j, xv) in xv.iter_mut().enumerate() {
                *xv = _mm256_loadu_ps(x.add(j * col_stride + q));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let d = _mm256_maskload_ps(dy.add(i * dy_stride + q), mask);
                for (a, xv) in row.iter_mut().zip(xv) {
                    *a = _mm256_fmadd_ps(d, xv, *a);
                }
            }
        }
        for (o, row) in out.iter_mut().zip(&acc) {
            for (o, a) in o.iter_mut().zip(row) {
                *o = hsum(*a);
            }
        }
    }

    /// Sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx {
    //! Never called off x86-64: `available()` is false there and callers fall back to burn.

    use super::{MO, NJ};

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_strip<const K: usize>(
        _x: *const f32,
        _in_len: usize,
        _wp: usize,
        _c_in: usize,
        _w: *const f32,
        _bias: *const f32,
        _y: *mut f32,
        _out_stride: usize,
    ) {
        unreachable!("fastconv kernels need x86-64 AVX2")
    }

    pub(super) unsafe fn dot_block<const J: usize>(
        _dy: *const f32,
        _dy_stride: usize,
        _x: *const f32,
        _col_stride: usize,
        _npos: usize,
        _out: &mut [[f32; NJ]; MO],
    ) {
        unreachable!("fastconv kernels need x86-64 AVX2")
    }
}
