//! Band-tiled direct convolution kernels (x86-64 AVX2 + FMA), forward and backward.
//!
//! [`forward`] and [`backward`] hand 3x3 convolutions with at least 8 input and output channels
//! to the Winograd kernels of [`winograd`] (which reuse this module's 1x1 and dot-product register
//! blocks) unless the caller chose the direct algorithm (`super::with_algorithm`).
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
//! The input gradient is the forward block run on the output gradient with the kernel
//! transposed and flipped. The weight gradient reuses that packed output gradient: output
//! position `q` of a band sits at plane index `q + lead + halo * wp`, and its discarded columns
//! are zero there, so they add nothing to the dot products.
//!
//! Tasks are (image, band) pairs on rayon's pool, each writing disjoint rows of the result;
//! weight and bias gradients are summed per fixed chunk of tasks, then across chunks in order,
//! so every result is independent of thread count and scheduling.

use std::cell::RefCell;

use rayon::prelude::*;

use super::ConvShape;
pub(crate) use crate::flex::output_buffer;

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
///
/// Band heights follow from it, and they set the order in which the weight gradient's products
/// are summed: changing it changes trained weights in the last bits (and, through them, short
/// training runs). Measured alternatives (128 KiB forward, 384 KiB backward) were within noise.
const BAND_BYTES: usize = 192 * 1024;
/// Weight and bias gradients are summed in this many fixed chunks of (image, band) tasks
/// (fewer if there are fewer tasks): enough to balance two to a few threads, few enough that
/// the partial sums stay small.
const REDUCE_CHUNKS: usize = 32;
/// Elements per parallel task when the chunks' partial sums are added up.
const REDUCE_PIECE: usize = 2048;

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
    /// Geometry for `shape`, with bands sized so that `channels` planes of band rows stay
    /// within [`BAND_BYTES`].
    fn new(shape: &ConvShape, channels: usize) -> Self {
        let (k, h, w) = (shape.k, shape.h, shape.w);
        let (wp, lead, halo) = if k == 3 { (w + 1, 1, 1) } else { (w, 0, 0) };
        let per_row = channels.max(1) * wp * core::mem::size_of::<f32>();
        // As many rows as fit the budget, then evened out over the bands: a short last band
        // would pay the per-band costs (halo rows, register block set-up) for little work.
        let max_rows = (BAND_BYTES / per_row).clamp(1, h);
        let rows = h.div_ceil(h.div_ceil(max_rows));
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
    /// `[channels][h][w]`) into the first `planes` planes of `in_len` floats of `dst`, zero
    /// padded as described in the module docs; planes `channels .. planes` are zeroed entirely.
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
            let next = (c + 1 < channels).then(|| &src[(c + 1) * h * w..(c + 2) * h * w]);
            plane[..self.lead].fill(0.0);
            let rows_end = self.lead + (r + 2 * self.halo) * wp;
            for (pr, row) in plane[self.lead..rows_end].chunks_exact_mut(wp).enumerate() {
                // Image row of padded row `pr`; out of range above the image wraps to a huge value.
                let y = (h0 + pr).wrapping_sub(self.halo);
                if y < h {
                    if let Some(next) = next {
                        prefetch(next, y..y + 1, w);
                    }
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

/// Asks the cache for rows `rows` of the `[h][w]` plane `img`: a row of the next channel's
/// band, while the same row of this one is copied or transformed.
///
/// A band of one channel is a few kilobytes, contiguous, and the next channel's lies a whole
/// plane away: the hardware prefetchers had just ramped up when each band ended, so the first
/// read of every input row waited on memory (in the Winograd transforms 10% of a training step,
/// perf). Prefetches change no value. One row at a time, spread over the work:
/// a whole band's prefetches at once filled the core's miss buffers and the prefetch
/// instructions themselves stalled (2% of a step, perf annotate).
#[inline(always)]
fn prefetch(img: &[f32], rows: core::ops::Range<usize>, w: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let band = &img[rows.start * w..rows.end * w];
        for line in band.chunks(16) {
            // SAFETY: a prefetch hint of an address inside `img`; it never faults or writes.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    line.as_ptr() as *const i8,
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (img, rows, w);
}

/// Per-thread scratch buffers, reused across tasks and calls so that steady-state training
/// allocates nothing but result tensors.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers, at least `a`, `b` and `c` floats long.
///
/// `f` must not re-enter (no rayon calls inside), or the second borrow panics.
fn with_scratch<R>(
    a: usize,
    b: usize,
    c: usize,
    f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        for (buf, len) in [(&mut s.a, a), (&mut s.b, b), (&mut s.c, c)] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        f(&mut s.a[..a], &mut s.b[..b], &mut s.c[..c])
    })
}

/// A raw output pointer shared by tasks that write disjoint regions of one buffer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used by `conv_driver` and `backward`, whose tasks write pairwise disjoint index sets
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
    epilogue: Epilogue,
) -> Vec<f32> {
    if winograd::applies(shape) && super::algorithm() == super::Algorithm::Winograd {
        return winograd::forward(x, weight, bias, shape, epilogue);
    }
    if pointwise::forward_applies(shape) {
        let mut out = pointwise::forward(x, weight, bias, shape);
        if let Some(f) = epilogue {
            // Not fused here (no caller needs it): a separate pass with the same result.
            const PIECE: usize = 1 << 16;
            out.par_chunks_mut(PIECE)
                .enumerate()
                .for_each(|(i, run)| f(run, i * PIECE));
        }
        return out;
    }
    let taps = shape.k * shape.k;
    let packed = pack_weights(weight, shape.c_out, shape.c_in, taps, false);
    let mut bias_padded = vec![0.0; shape.c_out.next_multiple_of(MO)];
    if let Some(b) = bias {
        bias_padded[..shape.c_out].copy_from_slice(b);
    }
    conv_driver(
        x,
        shape.c_in,
        shape.c_out,
        &packed,
        &bias_padded,
        shape,
        epilogue,
    )
}

/// An elementwise function applied in place to a forward convolution's output while each
/// task's rows are still in cache: `f(run, index)` for contiguous runs of the output, `index`
/// the run's first element in the whole `[n][c_out][h][w]` output. Every element is in exactly
/// one run.
pub(super) type Epilogue<'a> = Option<&'a (dyn Fn(&mut [f32], usize) + Sync)>;

/// Applies `epilogue` to `len` elements of `out` from element `at`.
///
/// # Safety
/// `at .. at + len` lies in the output `out` points into, is initialised, and no other thread
/// reads or writes it meanwhile.
#[inline]
unsafe fn apply_epilogue(epilogue: Epilogue, out: &SharedOut, at: usize, len: usize) {
    if let Some(f) = epilogue {
        // SAFETY: as the caller promises.
        f(
            unsafe { std::slice::from_raw_parts_mut(out.at(at), len) },
            at,
        );
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
    epilogue: Epilogue,
) -> Vec<f32> {
    let c_dst_pad = c_dst.next_multiple_of(MO);
    let geo = Geometry::new(shape, c_src + c_dst_pad);
    let (n, h, w) = (shape.n, shape.h, shape.w);
    let mut out = output_buffer(n * c_dst * h * w);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let bands = geo.bands();
    (0..n * bands).into_par_iter().for_each(|task| {
        let (img, band) = (task / bands, task % bands);
        let (h0, r) = geo.band(band);
        let src_img = &src[img * c_src * h * w..(img + 1) * c_src * h * w];
        let (a, b) = (c_src * geo.in_len, c_dst_pad * geo.out_len);
        with_scratch(a, b, 0, |xb, yb, _| {
            geo.pack(src_img, c_src, c_src, h0, r, xb);
            forward_band(&geo, xb, c_src, packed, bias, c_dst_pad, r, yb);
            for co in 0..c_dst {
                for rr in 0..r {
                    let from = &yb[co * geo.out_len + rr * geo.wp..][..w];
                    let at = ((img * c_dst + co) * h + h0 + rr) * w;
                    // SAFETY: `at .. at + w` lies in `out` (img < n, co < c_dst, h0 + rr < h),
                    // and (img, h0 + rr) identifies this task's rows: no other task writes them.
                    unsafe {
                        std::ptr::copy_nonoverlapping(from.as_ptr(), out_ptr.at(at), w);
                    }
                }
                // SAFETY: the r rows just written, this task's alone.
                unsafe {
                    apply_epilogue(epilogue, &out_ptr, ((img * c_dst + co) * h + h0) * w, r * w)
                };
            }
        });
    });
    // SAFETY: the tasks cover every (image, band) pair and each wrote all `c_dst` channels of
    // its `r` rows in full, so all `n * c_dst * h * w` elements are initialised.
    unsafe { out.set_len(n * c_dst * h * w) };
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
    assert!(c_src > 0 && xb.len() >= c_src * geo.in_len && yb.len() >= c_dst_pad * geo.out_len);
    assert!(
        strips * STRIP <= geo.out_len && strips * STRIP + (geo.k - 1) * (geo.wp + 1) <= geo.in_len
    );
    for blk in 0..c_dst_pad / MO {
        let wblk = &packed[blk * c_src * taps * MO..(blk + 1) * c_src * taps * MO];
        let bias4 = &bias[blk * MO..(blk + 1) * MO];
        let out = &mut yb[blk * MO * geo.out_len..(blk + 1) * MO * geo.out_len];
        for s in 0..strips {
            // SAFETY: `available()` was checked before any kernel call (see `super::flex_shape`);
            // the assertions above bound every load (strip start + tap offset + STRIP
            // ≤ in_len within each of the c_src ≥ 1 planes) and store (s * STRIP + STRIP ≤ out_len
            // in each of the MO rows of this block).
            unsafe {
                let x = xb.as_ptr().add(s * STRIP);
                let y = out.as_mut_ptr().add(s * STRIP);
                let (w, b) = (wblk.as_ptr(), bias4.as_ptr());
                if geo.k == 3 {
                    avx::conv3_strip(x, geo.in_len, geo.wp, c_src, w, b, y, geo.out_len);
                } else {
                    avx::conv1_strip(x, geo.in_len, c_src, w, b, y, geo.out_len);
                }
            }
        }
    }
}

/// Gradients of the convolution for the output gradient `dy [n][c_out][h][w]`.
///
/// One pass over (image, band) tasks computes all requested gradients, so the output gradient
/// is packed once per band for both the input-gradient convolution and the weight-gradient dot
/// products. Weight and bias gradients are summed per fixed chunk of tasks and the chunks added
/// in order, so results do not depend on thread count or scheduling.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    needs: Needs,
) -> Grads {
    if winograd::applies(shape) && super::algorithm() == super::Algorithm::Winograd {
        return winograd::backward(x, weight, dy, shape, needs);
    }
    if pointwise::backward_applies(shape, needs) {
        return pointwise::backward(x, weight, dy, shape, needs);
    }
    let (n, c_in, c_out, h, w) = (shape.n, shape.c_in, shape.c_out, shape.h, shape.w);
    let taps = shape.k * shape.k;
    let cols = c_in * taps;
    let c_in_pad = c_in.next_multiple_of(MO);
    let c_out_pad = c_out.next_multiple_of(MO);
    // 1x1 weight-gradient column blocks run over input planes: pad to whole blocks with zeros.
    let x_planes = if taps == 1 {
        c_in.next_multiple_of(NJ)
    } else {
        c_in
    };
    let band_channels = c_out_pad
        + if needs.input { c_in_pad } else { 0 }
        + if needs.weight { x_planes } else { 0 };
    let geo = Geometry::new(shape, band_channels);
    let bands = geo.bands();
    let tasks = n * bands;
    let packed_t = needs
        .input
        .then(|| pack_weights(weight, c_out, c_in, taps, true));
    let no_bias = vec![0.0f32; c_in_pad];
    let mut dx = needs.input.then(|| output_buffer(n * c_in * h * w));
    let dx_ptr = dx.as_mut().map(|v| SharedOut(v.as_mut_ptr()));
    let tap_offsets: Vec<usize> = geo.taps().collect();

    let one_task = |task: usize, dw: &mut [f32], db: &mut [f32]| {
        let (img, band) = (task / bands, task % bands);
        let (h0, r) = geo.band(band);
        let dy_img = &dy[img * c_out * h * w..(img + 1) * c_out * h * w];
        let a = c_out_pad * geo.in_len;
        let b = if needs.input {
            c_in_pad * geo.out_len
        } else {
            0
        };
        let c = if needs.weight {
            x_planes * geo.in_len
        } else {
            0
        };
        with_scratch(a, b, c, |dyb, dxb, xb| {
            geo.pack(dy_img, c_out, c_out_pad, h0, r, dyb);
            if let (Some(packed_t), Some(dx_ptr)) = (&packed_t, dx_ptr) {
                forward_band(&geo, dyb, c_out, packed_t, &no_bias, c_in_pad, r, dxb);
                for ci in 0..c_in {
                    for rr in 0..r {
                        let from = &dxb[ci * geo.out_len + rr * geo.wp..][..w];
                        let at = ((img * c_in + ci) * h + h0 + rr) * w;
                        // SAFETY: `at .. at + w` lies in `dx` (img < n, ci < c_in, h0 + rr < h),
                        // and (img, h0 + rr) identifies this task's rows: no other task writes them.
                        unsafe {
                            std::ptr::copy_nonoverlapping(from.as_ptr(), dx_ptr.at(at), w);
                        }
                    }
                }
            }
            if needs.weight || needs.bias {
                let planes = output_planes(&geo, dyb, c_out_pad, r);
                let nvec = planes_nvec(&geo, r);
                if needs.bias {
                    for (co, acc) in db.iter_mut().enumerate() {
                        *acc += sum_vectors(&planes[co * geo.in_len..][..8 * nvec]);
                    }
                }
                if needs.weight {
                    let x_img = &x[img * c_in * h * w..(img + 1) * c_in * h * w];
                    geo.pack(x_img, c_in, x_planes, h0, r, xb);
                    weight_grad_band(&geo, planes, c_out, xb, cols, &tap_offsets, r, dw);
                }
            }
        });
    };

    // Fixed chunks of consecutive tasks, each summing into its own partial gradients (the
    // weight gradient in the register-block layout of `weight_grad_band`).
    let blocked_len = c_out_pad / MO * cols.div_ceil(NJ) * MO * NJ;
    let dw_len = if needs.weight { blocked_len } else { 0 };
    let (dw, db) = sum_over_chunks(tasks, dw_len, c_out, one_task);
    if let Some(dx) = dx.as_mut() {
        // SAFETY: the tasks cover every (image, band) pair and each wrote all `c_in` channels of
        // its rows in full, so all `n * c_in * h * w` elements are initialised.
        unsafe { dx.set_len(n * c_in * h * w) };
    }
    Grads {
        input: dx,
        weight: needs.weight.then(|| unblock(&dw, c_out, cols)),
        bias: needs.bias.then_some(db),
    }
}

/// Runs tasks `0 .. tasks` in at most [`REDUCE_CHUNKS`] fixed chunks of consecutive tasks on
/// rayon's pool, each chunk's tasks adding into that chunk's own partial sums (`len_a` and
/// `len_b` floats, zeroed), then adds the chunks' sums in chunk order: the totals do not depend
/// on thread count or scheduling.
fn sum_over_chunks(
    tasks: usize,
    len_a: usize,
    len_b: usize,
    one_task: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let chunks = tasks.min(REDUCE_CHUNKS);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let (mut a, mut b) = (vec![0.0f32; len_a], vec![0.0f32; len_b]);
            for task in chunk * tasks / chunks..(chunk + 1) * tasks / chunks {
                one_task(task, &mut a, &mut b);
            }
            (a, b)
        })
        .collect();
    let (a, b): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    (add_in_chunk_order(a), add_in_chunk_order(b))
}

/// The first chunk's partial sums plus the others in chunk order, element by element.
///
/// Only the elements are split between threads, so every total is the same sum as a serial
/// loop's (run serially, this pass left the other cores idle for ~1% of a training step).
fn add_in_chunk_order(mut parts: Vec<Vec<f32>>) -> Vec<f32> {
    let Some((total, rest)) = parts.split_first_mut() else {
        return Vec::new();
    };
    total
        .par_chunks_mut(REDUCE_PIECE)
        .enumerate()
        .for_each(|(i, piece)| {
            for part in rest.iter() {
                let part = &part[i * REDUCE_PIECE..][..piece.len()];
                piece.iter_mut().zip(part).for_each(|(x, y)| *x += y);
            }
        });
    std::mem::take(total)
}

/// Converts a weight gradient from the register-block layout of [`weight_grad_band`]
/// (`[c_out / MO][cols / NJ][MO][NJ]`, both rounded up) to burn's `[c_out][cols]`.
fn unblock(blocked: &[f32], c_out: usize, cols: usize) -> Vec<f32> {
    let col_blocks = cols.div_ceil(NJ);
    let mut dw = vec![0.0f32; c_out * cols];
    for (co, row) in dw.chunks_exact_mut(cols).enumerate() {
        for (col, v) in row.iter_mut().enumerate() {
            *v = blocked[((co / MO * col_blocks + col / NJ) * MO + co % MO) * NJ + col % NJ];
        }
    }
    dw
}

/// Number of 8-float vectors covering the `r * wp` output positions of a band.
fn planes_nvec(geo: &Geometry, r: usize) -> usize {
    (r * geo.wp).div_ceil(8)
}

/// Turns the band's packed output gradient (`planes` planes of `in_len`, packed as a
/// convolution input) into output-layout planes: returns the buffer from output position 0 of
/// plane 0 (`lead + halo * wp` into it), with planes still `in_len` apart.
///
/// Position `q` of the band then sits at index `q` of each plane, the discarded columns hold
/// zeros already, and the few floats after the last position (the start of the bottom halo row)
/// are zeroed here, so that whole vectors can be summed over. Call after the input-gradient
/// convolution, which reads that halo row.
fn output_planes<'a>(geo: &Geometry, dyb: &'a mut [f32], planes: usize, r: usize) -> &'a [f32] {
    let shift = geo.lead + geo.halo * geo.wp;
    let (npos, end) = (r * geo.wp, 8 * planes_nvec(geo, r));
    assert!(shift + end <= geo.in_len && dyb.len() >= planes * geo.in_len);
    for plane in dyb.chunks_exact_mut(geo.in_len).take(planes) {
        plane[shift + npos..shift + end].fill(0.0);
    }
    &dyb[shift..planes * geo.in_len]
}

/// Sum of a slice of whole 8-float vectors (vectorised; a plain `iter().sum()` is one serial
/// chain of dependent scalar adds and measured ~10 ms per 128x128 layer).
fn sum_vectors(values: &[f32]) -> f32 {
    assert!(values.len() % 8 == 0);
    if values.is_empty() {
        return 0.0;
    }
    // SAFETY: kernels available (checked before any kernel call, see `super::flex_shape`);
    // reads exactly `values`.
    unsafe { avx::sum(values.as_ptr(), values.len() / 8) }
}

/// Adds one band's weight gradient to `dw`, kept in register-block layout
/// `[c_out / MO][cols / NJ][MO][NJ]` (both rounded up; see [`unblock`]) so that each block's
/// twelve sums are added by the assembly block itself to twelve consecutive floats.
///
/// `dy` holds the band's output gradient in output layout (see [`output_planes`]: `c_out`
/// rounded up to [`MO`] planes, `in_len` apart), `xb` the band's packed input planes; `cols` is
/// `c_in * taps`.
#[allow(clippy::too_many_arguments)]
fn weight_grad_band(
    geo: &Geometry,
    dy: &[f32],
    c_out: usize,
    xb: &[f32],
    cols: usize,
    tap_offsets: &[usize],
    r: usize,
    dw: &mut [f32],
) {
    let taps = tap_offsets.len();
    let nvec = planes_nvec(geo, r);
    let c_out_pad = c_out.next_multiple_of(MO);
    let col_blocks = cols.div_ceil(NJ);
    let x_planes = xb.len() / geo.in_len;
    let col_stride = if taps == 1 { geo.in_len } else { 1 };
    assert!(dy.len() >= (c_out_pad - 1) * geo.in_len + 8 * nvec);
    assert!(dw.len() >= c_out_pad / MO * col_blocks * MO * NJ);
    // Within a plane, a 3x3 block reads columns at tap offsets +0, +1, +2; a 1x1 block reads
    // offset 0 of NJ consecutive planes.
    let last_col = if taps == 1 { 0 } else { NJ - 1 };
    assert!(tap_offsets
        .iter()
        .all(|&o| o + last_col + 8 * nvec <= geo.in_len));
    for blk in 0..c_out_pad / MO {
        let dyp = dy[blk * MO * geo.in_len..].as_ptr();
        for cb in 0..col_blocks {
            // Columns of one block: consecutive taps of one kernel row (3x3), or consecutive
            // input channels (1x1): a constant pointer stride. A short last block (1x1 only)
            // reads the zero planes packed after the input channels; `unblock` drops its sums.
            let col = cb * NJ;
            let (ci, t) = (col / taps, col % taps);
            assert!(taps == 1 || (col + NJ <= cols && t % geo.k == 0));
            assert!(ci + if taps == 1 { NJ - 1 } else { 0 } < x_planes);
            let xp = xb[ci * geo.in_len + tap_offsets[t]..].as_ptr();
            let acc = &mut dw[(blk * col_blocks + cb) * MO * NJ..][..MO * NJ];
            // SAFETY: kernels available (checked before any kernel call, see
            // `super::flex_shape`); dy: MO planes `in_len` apart read for 8 * nvec floats
            // (asserted above); x: NJ columns `col_stride` apart read from a tap offset for
            // 8 * nvec floats, inside the x_planes planes (asserted above); `acc` holds the
            // 12 floats written.
            unsafe {
                avx::dot_block(dyp, geo.in_len, xp, col_stride, nvec, acc.as_mut_ptr());
            }
        }
    }
}

mod pointwise;
mod winograd;

#[cfg(target_arch = "x86_64")]
mod avx {
    //! The AVX2 + FMA register blocks, in inline assembly.
    //!
    //! Written in assembly rather than intrinsics for two measured reasons: with intrinsics LLVM
    //! hoists the input loads and spills accumulators of these 16-register blocks to the stack,
    //! and in this crate's dev profile (debug assertions on) every intrinsic load also carries a
    //! `copy_nonoverlapping` precondition check that forces its value through memory — together
    //! 3-5x slower. Assembly keeps the blocks identical in every profile.
    //!
    //! Register use in both blocks: `ymm0..ymm11` accumulate `acc[i][j]` as `ymm(3 * i + j)`
    //! for output row `i < 4` and vector/column `j < 3`; `ymm12..ymm14` hold input vectors and
    //! `ymm15` the broadcast weight or output-gradient vector. Callers guarantee AVX2 and FMA.

    use core::arch::asm;

    /// One tap of the forward block: loads three input vectors at `row + 4 * kw` bytes and
    /// multiply-adds them with the four weights of tap `t` (16 bytes per tap in the packing).
    #[rustfmt::skip]
    macro_rules! tap {
        ($row:literal, $kw:literal, $t:literal) => {
            concat!(
                "vmovups ymm12, [", $row, " + 4*", $kw, "]\n",
                "vmovups ymm13, [", $row, " + 4*", $kw, " + 32]\n",
                "vmovups ymm14, [", $row, " + 4*", $kw, " + 64]\n",
                "vbroadcastss ymm15, [{w} + 16*", $t, "]\n",
                "vfmadd231ps ymm0, ymm15, ymm12\n",
                "vfmadd231ps ymm1, ymm15, ymm13\n",
                "vfmadd231ps ymm2, ymm15, ymm14\n",
                "vbroadcastss ymm15, [{w} + 16*", $t, " + 4]\n",
                "vfmadd231ps ymm3, ymm15, ymm12\n",
                "vfmadd231ps ymm4, ymm15, ymm13\n",
                "vfmadd231ps ymm5, ymm15, ymm14\n",
                "vbroadcastss ymm15, [{w} + 16*", $t, " + 8]\n",
                "vfmadd231ps ymm6, ymm15, ymm12\n",
                "vfmadd231ps ymm7, ymm15, ymm13\n",
                "vfmadd231ps ymm8, ymm15, ymm14\n",
                "vbroadcastss ymm15, [{w} + 16*", $t, " + 12]\n",
                "vfmadd231ps ymm9, ymm15, ymm12\n",
                "vfmadd231ps ymm10, ymm15, ymm13\n",
                "vfmadd231ps ymm11, ymm15, ymm14\n",
            )
        };
    }

    /// Loads the four biases at `{b}` into the accumulators.
    macro_rules! init_bias {
        () => {
            concat!(
                "vbroadcastss ymm0, [{b}]\n",
                "vmovaps ymm1, ymm0\n",
                "vmovaps ymm2, ymm0\n",
                "vbroadcastss ymm3, [{b} + 4]\n",
                "vmovaps ymm4, ymm3\n",
                "vmovaps ymm5, ymm3\n",
                "vbroadcastss ymm6, [{b} + 8]\n",
                "vmovaps ymm7, ymm6\n",
                "vmovaps ymm8, ymm6\n",
                "vbroadcastss ymm9, [{b} + 12]\n",
                "vmovaps ymm10, ymm9\n",
                "vmovaps ymm11, ymm9\n",
            )
        };
    }

    /// Stores the accumulators as four rows of 24 floats, `{os}` bytes apart, from `{y}`.
    macro_rules! store_rows {
        () => {
            concat!(
                "vmovups [{y}], ymm0\n",
                "vmovups [{y} + 32], ymm1\n",
                "vmovups [{y} + 64], ymm2\n",
                "add {y}, {os}\n",
                "vmovups [{y}], ymm3\n",
                "vmovups [{y} + 32], ymm4\n",
                "vmovups [{y} + 64], ymm5\n",
                "add {y}, {os}\n",
                "vmovups [{y}], ymm6\n",
                "vmovups [{y} + 32], ymm7\n",
                "vmovups [{y} + 64], ymm8\n",
                "add {y}, {os}\n",
                "vmovups [{y}], ymm9\n",
                "vmovups [{y} + 32], ymm10\n",
                "vmovups [{y} + 64], ymm11\n",
                "vzeroupper\n",
            )
        };
    }

    /// One forward register block of a 3x3 convolution: 4 output rows x 24 positions,
    /// `y[i][p] = bias[i] + Σ_ci Σ_{kh,kw} w[ci][kh * 3 + kw][i] * x[ci * in_len + kh * wp + kw + p]`,
    /// row `i` of `y` at `y + i * out_stride`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `c_in ≥ 1`; `x` readable for `c_in` planes of `in_len` floats up to
    /// plane offset `2 * wp + 2 + 24`; `w` readable for `c_in * 36` floats, `bias` for 4; `y`
    /// writable for 4 rows of 24.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv3_strip(
        x: *const f32,
        in_len: usize,
        wp: usize,
        c_in: usize,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        out_stride: usize,
    ) {
        asm!(
            init_bias!(),
            "2:",
            tap!("{x}", 0, 0),
            tap!("{x}", 1, 1),
            tap!("{x}", 2, 2),
            tap!("{x} + {wp}", 0, 3),
            tap!("{x} + {wp}", 1, 4),
            tap!("{x} + {wp}", 2, 5),
            tap!("{x} + 2*{wp}", 0, 6),
            tap!("{x} + 2*{wp}", 1, 7),
            tap!("{x} + 2*{wp}", 2, 8),
            "add {x}, {il}",
            "add {w}, 144",
            "dec {n}",
            "jnz 2b",
            store_rows!(),
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) c_in => _,
            y = inout(reg) y => _,
            wp = in(reg) wp * 4,
            il = in(reg) in_len * 4,
            os = in(reg) out_stride * 4,
            b = in(reg) bias,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack),
        );
    }

    /// [`conv3_strip`] for a 1x1 convolution: `y[i][p] = bias[i] + Σ_ci w[ci][i] * x[ci * in_len + p]`.
    ///
    /// # Safety
    /// As [`conv3_strip`] with plane reads up to offset 24 and `w` readable for `c_in * 4` floats.
    pub(super) unsafe fn conv1_strip(
        x: *const f32,
        in_len: usize,
        c_in: usize,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        out_stride: usize,
    ) {
        asm!(
            init_bias!(),
            "2:",
            tap!("{x}", 0, 0),
            "add {x}, {il}",
            "add {w}, 16",
            "dec {n}",
            "jnz 2b",
            store_rows!(),
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) c_in => _,
            y = inout(reg) y => _,
            il = in(reg) in_len * 4,
            os = in(reg) out_stride * 4,
            b = in(reg) bias,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack),
        );
    }

    /// Multiply-adds the output-gradient vector in `ymm15` with the three input vectors into
    /// accumulators `ymm(a)`, `ymm(a + 1)`, `ymm(a + 2)`.
    #[rustfmt::skip]
    macro_rules! dot3 {
        ($a0:literal, $a1:literal, $a2:literal) => {
            concat!(
                "vfmadd231ps ymm", $a0, ", ymm15, ymm12\n",
                "vfmadd231ps ymm", $a1, ", ymm15, ymm13\n",
                "vfmadd231ps ymm", $a2, ", ymm15, ymm14\n",
            )
        };
    }

    /// One weight-gradient register block: `acc[3 * i + j] += Σ_{v < nvec} Σ_{l < 8}
    /// dy[i * dy_stride + 8v + l] * x[j * col_stride + 8v + l]` for `i < 4`, `j < 3`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `nvec ≥ 1`; the 4 `dy` rows and 3 `x` columns readable for
    /// `8 * nvec` floats; `acc` readable and writable for 12 floats.
    pub(super) unsafe fn dot_block(
        dy: *const f32,
        dy_stride: usize,
        x: *const f32,
        col_stride: usize,
        nvec: usize,
        acc: *mut f32,
    ) {
        asm!(
            "vxorps ymm0, ymm0, ymm0",
            "vxorps ymm1, ymm1, ymm1",
            "vxorps ymm2, ymm2, ymm2",
            "vxorps ymm3, ymm3, ymm3",
            "vxorps ymm4, ymm4, ymm4",
            "vxorps ymm5, ymm5, ymm5",
            "vxorps ymm6, ymm6, ymm6",
            "vxorps ymm7, ymm7, ymm7",
            "vxorps ymm8, ymm8, ymm8",
            "vxorps ymm9, ymm9, ymm9",
            "vxorps ymm10, ymm10, ymm10",
            "vxorps ymm11, ymm11, ymm11",
            "2:",
            "vmovups ymm12, [{x}]",
            "vmovups ymm13, [{x} + {cs}]",
            "vmovups ymm14, [{x} + 2*{cs}]",
            "vmovups ymm15, [{d}]",
            dot3!(0, 1, 2),
            "vmovups ymm15, [{d} + {ds}]",
            dot3!(3, 4, 5),
            "vmovups ymm15, [{d} + 2*{ds}]",
            dot3!(6, 7, 8),
            "vmovups ymm15, [{d3}]",
            dot3!(9, 10, 11),
            "add {x}, 32",
            "add {d}, 32",
            "add {d3}, 32",
            "dec {n}",
            "jnz 2b",
            // Horizontal sums, four accumulators at a time: two rounds of pairwise adds leave
            // [Σa, Σb, Σc, Σd] split over the two 128-bit lanes, which are then added.
            "vhaddps ymm0, ymm0, ymm1",
            "vhaddps ymm2, ymm2, ymm3",
            "vhaddps ymm0, ymm0, ymm2",
            "vextractf128 xmm1, ymm0, 1",
            "vaddps xmm0, xmm0, xmm1",
            "vaddps xmm0, xmm0, [{o}]",
            "vmovups [{o}], xmm0",
            "vhaddps ymm4, ymm4, ymm5",
            "vhaddps ymm6, ymm6, ymm7",
            "vhaddps ymm4, ymm4, ymm6",
            "vextractf128 xmm5, ymm4, 1",
            "vaddps xmm4, xmm4, xmm5",
            "vaddps xmm4, xmm4, [{o} + 16]",
            "vmovups [{o} + 16], xmm4",
            "vhaddps ymm8, ymm8, ymm9",
            "vhaddps ymm10, ymm10, ymm11",
            "vhaddps ymm8, ymm8, ymm10",
            "vextractf128 xmm9, ymm8, 1",
            "vaddps xmm8, xmm8, xmm9",
            "vaddps xmm8, xmm8, [{o} + 32]",
            "vmovups [{o} + 32], xmm8",
            "vzeroupper",
            x = inout(reg) x => _,
            d = inout(reg) dy => _,
            d3 = inout(reg) dy.wrapping_add(3 * dy_stride) => _,
            n = inout(reg) nvec => _,
            cs = in(reg) col_stride * 4,
            ds = in(reg) dy_stride * 4,
            o = in(reg) acc,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack),
        );
    }

    /// Sum of `nvec ≥ 1` vectors of 8 floats from `v`.
    ///
    /// # Safety
    /// AVX available; `v` readable for `8 * nvec` floats.
    pub(super) unsafe fn sum(v: *const f32, nvec: usize) -> f32 {
        let total: f32;
        asm!(
            "vxorps ymm0, ymm0, ymm0",
            "vxorps ymm1, ymm1, ymm1",
            "vxorps ymm2, ymm2, ymm2",
            "vxorps ymm3, ymm3, ymm3",
            // Four independent accumulators while four vectors remain, then one at a time.
            "cmp {n}, 4",
            "jb 3f",
            "2:",
            "vaddps ymm0, ymm0, [{v}]",
            "vaddps ymm1, ymm1, [{v} + 32]",
            "vaddps ymm2, ymm2, [{v} + 64]",
            "vaddps ymm3, ymm3, [{v} + 96]",
            "add {v}, 128",
            "sub {n}, 4",
            "cmp {n}, 4",
            "jae 2b",
            "3:",
            "test {n}, {n}",
            "jz 5f",
            "4:",
            "vaddps ymm0, ymm0, [{v}]",
            "add {v}, 32",
            "dec {n}",
            "jnz 4b",
            "5:",
            "vaddps ymm0, ymm0, ymm1",
            "vaddps ymm2, ymm2, ymm3",
            "vaddps ymm0, ymm0, ymm2",
            "vextractf128 xmm1, ymm0, 1",
            "vaddps xmm0, xmm0, xmm1",
            "vhaddps xmm0, xmm0, xmm0",
            "vhaddps xmm0, xmm0, xmm0",
            "vzeroupper",
            v = inout(reg) v => _,
            n = inout(reg) nvec => _,
            out("xmm0") total,
            out("ymm1") _, out("ymm2") _, out("ymm3") _,
            options(nostack, readonly),
        );
        total
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx {
    //! Never called off x86-64: `available()` is false there and callers fall back to burn.

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv3_strip(
        _x: *const f32,
        _in_len: usize,
        _wp: usize,
        _c_in: usize,
        _w: *const f32,
        _bias: *const f32,
        _y: *mut f32,
        _out_stride: usize,
    ) {
        unreachable!("leuko-kernels: the kernels need x86-64 AVX2")
    }

    pub(super) unsafe fn conv1_strip(
        _x: *const f32,
        _in_len: usize,
        _c_in: usize,
        _w: *const f32,
        _bias: *const f32,
        _y: *mut f32,
        _out_stride: usize,
    ) {
        unreachable!("leuko-kernels: the kernels need x86-64 AVX2")
    }

    pub(super) unsafe fn sum(_v: *const f32, _nvec: usize) -> f32 {
        unreachable!("leuko-kernels: the kernels need x86-64 AVX2")
    }

    pub(super) unsafe fn dot_block(
        _dy: *const f32,
        _dy_stride: usize,
        _x: *const f32,
        _col_stride: usize,
        _nvec: usize,
        _acc: *mut f32,
    ) {
        unreachable!("leuko-kernels: the kernels need x86-64 AVX2")
    }
}
