//! Helpers shared by the convolution and the fused-op kernels: reading flex tensors as plain
//! `f32` slices and wrapping kernel results back into flex tensors without copies.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;

/// The flex primitive behind `FloatTensor<Flex>`.
pub(crate) type FlexTensor = FloatTensor<Flex>;

/// `t` with a dense row-major buffer (a no-op for the usual, already contiguous tensors).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The elements of a contiguous `f32` tensor, without copying.
pub(crate) fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("flex kernels: tensor made contiguous f32 before reading")
}

/// Wraps a kernel result as a flex tensor without copying it.
pub(crate) fn from_vec(values: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    Flex::float_from_data(TensorData::new(values, dims), &Default::default())
}

/// An empty buffer with capacity for `len` floats, for a result tensor that the caller fills
/// completely before `set_len`.
///
/// Left uninitialised because zeroing it would be a wasted pass over tens of megabytes (when the
/// allocator reuses memory; fresh pages are zeroed by the kernel anyway). Fresh multi-megabyte
/// buffers come straight from `mmap`, and first-touching them 4 KiB page by page cost as much
/// as the convolution itself on the 128x128 layers (one 32 MiB output is 8192 page faults).
/// Where transparent huge pages are on `madvise` (the default of many distributions), advising
/// the buffer cuts that to a few dozen 2 MiB faults. Best effort: failures only cost speed.
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    let buf = Vec::<f32>::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_ptr() as usize;
        let end = start + len * core::mem::size_of::<f32>();
        let first = start.next_multiple_of(HUGE);
        if end >= first + HUGE {
            let advised = (end - first) / HUGE * HUGE;
            // SAFETY: `first .. first + advised` lies inside `buf`'s allocation; MADV_HUGEPAGE
            // only changes how the kernel backs those pages, never their contents.
            unsafe {
                libc::madvise(first as *mut libc::c_void, advised, libc::MADV_HUGEPAGE);
            }
        }
    }
    buf
}
