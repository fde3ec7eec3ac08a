//! 1x1 convolutions (the blocks' shortcuts) on the tensors' own `NCHW` layout.
//!
//! A 1x1 convolution needs no padding, and its band of rows `h0 .. h0 + r` is already one
//! contiguous run of `r * w` positions in every plane of the tensor. So the output (and the input
//! gradient) is written in place, with the tensor's plane stride `h * w`, and the weight and bias
//! gradients read the output gradient and the input in place, instead of going through
//! zero-padded band copies as the 3x3 kernels must: on the 128x128 first block the band path
//! made two extra passes over a 32 MiB tensor per convolution (perf: `memcpy` was 6%
//! of a training step). Only the forward blocks' input is still copied, one group of positions
//! at a time, because reading all input planes at once is more streams than the prefetchers
//! follow.
//!
//! Same blocks, same values, same order of operations as the band path: the output and input
//! gradient are the same `conv1_strip` sums per position, and the weight and bias gradients run
//! over the same bands (the same [`Geometry`]) in the same chunks, so the results are identical
//! to the last bit. Shapes outside the conditions below take the band path.

use rayon::prelude::*;

use super::super::ConvShape;
use super::{
    avx, output_buffer, pack_weights, prefetch, sum_over_chunks, sum_vectors, unblock,
    with_scratch, Geometry, Grads, Needs, SharedOut, MO, NJ, STRIP,
};

/// Input bytes (all channels) per group of positions that every output block runs over before
/// the next group: a quarter of the 512 KiB per-core L2 of the smallest cache tuned for,
/// leaving room for the outputs on their way out.
const GROUP_BYTES: usize = 128 * 1024;

/// Whether [`forward`] handles `shape`: 1x1, whole register blocks of output channels.
pub(super) fn forward_applies(shape: &ConvShape) -> bool {
    shape.k == 1 && shape.c_out % MO == 0
}

/// Whether [`backward`] handles `shape` for `needs`: as [`forward_applies`], rows of whole
/// vectors (so that every band is whole vectors, as the band path's sums assume), and whole
/// register blocks of input channels when the input gradient is wanted.
pub(super) fn backward_applies(shape: &ConvShape, needs: Needs) -> bool {
    forward_applies(shape) && shape.w % 8 == 0 && (!needs.input || shape.c_in % MO == 0)
}

/// `src [n][c_src][hw]` convolved with weights packed by [`pack_weights`] (`c_dst` a multiple of
/// [`MO`]) plus `bias` (`c_dst` entries): a new `[n][c_dst][hw]` buffer.
fn convolve(
    src: &[f32],
    c_src: usize,
    c_dst: usize,
    packed: &[f32],
    bias: &[f32],
    n: usize,
    hw: usize,
) -> Vec<f32> {
    assert!(c_dst % MO == 0 && bias.len() >= c_dst && src.len() >= n * c_src * hw);
    assert!(packed.len() >= c_dst * c_src);
    let mut out = output_buffer(n * c_dst * hw);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let strips = hw.div_ceil(STRIP);
    let group = (GROUP_BYTES / (c_src * STRIP * 4)).clamp(1, strips);
    (0..n).into_par_iter().for_each(|img| {
        let x = &src[img * c_src * hw..(img + 1) * c_src * hw];
        with_scratch(c_src * group * STRIP, MO * STRIP, 0, |xg, y_tail, _| {
            for s0 in (0..strips).step_by(group) {
                // One group of positions of every input plane, copied into contiguous planes
                // (zero past the image's end), then every block of output channels runs over
                // it: copying streams each plane in order, where the blocks' loads would
                // stream from all `c_src` planes at once, more streams than the prefetchers
                // follow.
                let gs = group.min(strips - s0);
                let (p0, len) = (s0 * STRIP, gs * STRIP);
                let valid = len.min(hw - p0);
                for (ci, plane) in xg.chunks_exact_mut(len).take(c_src).enumerate() {
                    if ci + 1 < c_src {
                        // The next plane's positions, seen as one row of a [1][hw] plane.
                        prefetch(&x[(ci + 1) * hw + p0..][..valid], 0..1, valid);
                    }
                    plane[..valid].copy_from_slice(&x[ci * hw + p0..ci * hw + p0 + valid]);
                    plane[valid..].fill(0.0);
                }
                for blk in 0..c_dst / MO {
                    let w = packed[blk * c_src * MO..(blk + 1) * c_src * MO].as_ptr();
                    let b = bias[blk * MO..(blk + 1) * MO].as_ptr();
                    let y0 = (img * c_dst + blk * MO) * hw;
                    for s in 0..gs {
                        let pos = p0 + s * STRIP;
                        let xs = xg[s * STRIP..].as_ptr();
                        if pos + STRIP <= hw {
                            // SAFETY: kernels available (checked before any kernel call, see
                            // `super::super::flex_shape`); reads STRIP floats of the c_src
                            // copied planes `len` apart; writes positions pos .. pos + STRIP ≤
                            // hw of MO output planes of this image, which no other task writes.
                            unsafe {
                                avx::conv1_strip(xs, len, c_src, w, b, out_ptr.at(y0 + pos), hw);
                            }
                        } else {
                            // The last, partial strip: through scratch, then its valid part.
                            // SAFETY: as above; writes MO rows of STRIP floats of `y_tail`.
                            unsafe {
                                avx::conv1_strip(xs, len, c_src, w, b, y_tail.as_mut_ptr(), STRIP);
                            }
                            for (i, t) in y_tail.chunks_exact(STRIP).enumerate() {
                                // SAFETY: positions pos .. hw of output plane blk * MO + i of
                                // this image, which no other task writes.
                                unsafe {
                                    let at = out_ptr.at(y0 + i * hw + pos);
                                    std::ptr::copy_nonoverlapping(t.as_ptr(), at, hw - pos);
                                }
                            }
                        }
                    }
                }
            }
        });
    });
    // SAFETY: every image's c_dst planes were written at every position (whole strips, then
    // the tail).
    unsafe { out.set_len(n * c_dst * hw) };
    out
}

/// Forward 1x1 convolution (see [`forward_applies`]).
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
) -> Vec<f32> {
    let packed = pack_weights(weight, shape.c_out, shape.c_in, 1, false);
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = vec![0.0; shape.c_out];
            &zeros
        }
    };
    convolve(
        x,
        shape.c_in,
        shape.c_out,
        &packed,
        bias,
        shape.n,
        shape.h * shape.w,
    )
}

/// Gradients of a 1x1 convolution (see [`backward_applies`]), as the band path's `backward`.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    needs: Needs,
) -> Grads {
    let (n, c_in, c_out, h, w) = (shape.n, shape.c_in, shape.c_out, shape.h, shape.w);
    let hw = h * w;
    let input = needs.input.then(|| {
        let packed_t = pack_weights(weight, c_out, c_in, 1, true);
        convolve(dy, c_out, c_in, &packed_t, &vec![0.0; c_in], n, hw)
    });
    if !(needs.weight || needs.bias) {
        return Grads {
            input,
            weight: None,
            bias: None,
        };
    }
    // The band path's bands and chunks (its band budget counts the planes it packs), so that
    // the sums run in the same order.
    let c_in_pad = c_in.next_multiple_of(MO);
    let x_planes = c_in.next_multiple_of(NJ);
    let band_channels =
        c_out + if needs.input { c_in_pad } else { 0 } + if needs.weight { x_planes } else { 0 };
    let geo = Geometry::new(shape, band_channels);
    let bands = geo.bands();
    let col_blocks = c_in.div_ceil(NJ);
    let one_task = |task: usize, dw: &mut [f32], db: &mut [f32]| {
        let (img, band) = (task / bands, task % bands);
        let (h0, r) = geo.band(band);
        let (p0, npos) = (h0 * w, r * w);
        let nvec = npos / 8;
        let dy_img = &dy[img * c_out * hw..(img + 1) * c_out * hw];
        if needs.bias {
            for (co, acc) in db.iter_mut().enumerate() {
                *acc += sum_vectors(&dy_img[co * hw + p0..co * hw + p0 + npos]);
            }
        }
        if !needs.weight {
            return;
        }
        let x_img = &x[img * c_in * hw..(img + 1) * c_in * hw];
        // A short last column block reads zero planes after the input channels, as packed.
        let short = c_in % NJ;
        let mut x_last = vec![0f32; if short > 0 { NJ * npos } else { 0 }];
        for (j, plane) in x_last.chunks_exact_mut(npos).take(short).enumerate() {
            let ci = c_in - short + j;
            plane.copy_from_slice(&x_img[ci * hw + p0..ci * hw + p0 + npos]);
        }
        for blk in 0..c_out / MO {
            let dyp = dy_img[blk * MO * hw + p0..].as_ptr();
            for cb in 0..col_blocks {
                let ci = cb * NJ;
                let (xp, stride) = if ci + NJ <= c_in {
                    (x_img[ci * hw + p0..].as_ptr(), hw)
                } else {
                    (x_last.as_ptr(), npos)
                };
                let acc = &mut dw[(blk * col_blocks + cb) * MO * NJ..][..MO * NJ];
                // SAFETY: kernels available (see `forward`); dy: MO planes of this image read
                // at positions p0 .. p0 + npos ≤ hw; x: NJ planes (of this image, or the copy)
                // read for npos = 8 * nvec floats; `acc` holds the 12 floats written.
                unsafe { avx::dot_block(dyp, hw, xp, stride, nvec, acc.as_mut_ptr()) };
            }
        }
    };
    let dw_len = if needs.weight {
        c_out / MO * col_blocks * MO * NJ
    } else {
        0
    };
    let (dw, db) = sum_over_chunks(n * bands, dw_len, c_out, one_task);
    Grads {
        input,
        weight: needs.weight.then(|| unblock(&dw, c_out, c_in)),
        bias: needs.bias.then_some(db),
    }
}
