//! Backend operations implementations.

use alloc::borrow::Cow;
use burn_backend::DType;
use burn_std::{bf16, f16};

use crate::FlexTensor;

/// The `DType` that matches `isize` on the current platform.
#[cfg(target_pointer_width = "64")]
pub(crate) const INDEX_DTYPE: DType = DType::I64;
/// The `DType` that matches `isize` on the current platform.
#[cfg(target_pointer_width = "32")]
pub(crate) const INDEX_DTYPE: DType = DType::I32;

/// Minimum total element count for rayon fan-out on per-row or per-chunk loops.
/// Below this, task-dispatch overhead dominates the per-unit work.
#[cfg(feature = "rayon")]
pub(crate) const PARALLEL_THRESHOLD: usize = 256 * 1024;

// memlab patch (vendor/README.md, item 4): element-wise kernels on both
// cores. The published crate splits element-wise work over rayon only from
// 4 Mi elements (`simd::portable`) or not at all (`unary_op`, `scalar_op`,
// `binary_op`'s general paths), so at the sizes of a small model (a few
// 10^4 to 10^6 elements per op) the second core idled. An element-wise
// result does not depend on how it is split, so results stay bit-identical
// whatever the number of threads.

/// Element count from which an element-wise kernel splits its work over
/// rayon's pool. Measured on a 2-core machine with memlab's warm workers
/// (`memlab_zoo::threads`): below this, handing a piece to the other core
/// costs about what it saves (docs/benchmarks.md, "Both cores").
pub(crate) const ELEMENTWISE_PARALLEL_THRESHOLD: usize = 16 * 1024;

/// Elements per piece once an element-wise kernel is split.
pub(crate) const ELEMENTWISE_CHUNK: usize = 8 * 1024;

/// Runs `f(piece, offset)` over consecutive pieces of `dst` (`offset` is the
/// piece's first index in `dst`): on rayon's pool from
/// [`ELEMENTWISE_PARALLEL_THRESHOLD`] elements, else once over all of it.
#[inline]
pub(crate) fn for_each_piece<E: Send>(dst: &mut [E], f: impl Fn(&mut [E], usize) + Sync + Send) {
    #[cfg(feature = "rayon")]
    if dst.len() >= ELEMENTWISE_PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        dst.par_chunks_mut(ELEMENTWISE_CHUNK)
            .enumerate()
            .for_each(|(i, piece)| f(piece, i * ELEMENTWISE_CHUNK));
        return;
    }
    f(dst, 0);
}

/// Runs `f(rows, first_row)` over consecutive whole rows of `dst` (rows of
/// `row_len` elements), split as [`for_each_piece`] splits.
#[inline]
pub(crate) fn for_each_rows<E: Send>(
    dst: &mut [E],
    row_len: usize,
    f: impl Fn(&mut [E], usize) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if row_len > 0 && dst.len() >= ELEMENTWISE_PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        let rows = (ELEMENTWISE_CHUNK / row_len).max(1);
        dst.par_chunks_mut(rows * row_len)
            .enumerate()
            .for_each(|(i, piece)| f(piece, i * rows));
        return;
    }
    let _ = row_len;
    f(dst, 0);
}

/// A vector of `n` elements whose pieces `f(piece, offset)` writes, split as
/// [`for_each_piece`] splits. `f` must write every element of its piece.
#[inline]
pub(crate) fn collect_pieces<E: Send + Copy>(
    n: usize,
    f: impl Fn(&mut [core::mem::MaybeUninit<E>], usize) + Sync + Send,
) -> alloc::vec::Vec<E> {
    let mut out = alloc::vec::Vec::with_capacity(n);
    for_each_piece(&mut out.spare_capacity_mut()[..n], f);
    // SAFETY: `f` wrote each of the `n` elements (its contract), and `E` is
    // `Copy`, so nothing is dropped if `f` panicked before this line.
    unsafe { out.set_len(n) };
    out
}

/// Wrapper for raw mutable pointers that can be sent across rayon threads.
///
/// # Safety
///
/// The caller must ensure:
/// - The pointer remains valid for the lifetime of all uses
/// - No two threads write to the same offset
/// - No references to the underlying data exist during writes
#[cfg(feature = "rayon")]
pub(crate) struct SendMutPtr<T>(*mut T);

#[cfg(feature = "rayon")]
unsafe impl<T> Send for SendMutPtr<T> {}
#[cfg(feature = "rayon")]
unsafe impl<T> Sync for SendMutPtr<T> {}

#[cfg(feature = "rayon")]
impl<T> SendMutPtr<T> {
    pub(crate) fn new(ptr: *mut T) -> Self {
        Self(ptr)
    }

    /// Write `val` at the given element offset.
    ///
    /// # Safety
    /// Offset must be in bounds and no other thread may write to the same offset.
    pub(crate) unsafe fn write(&self, offset: usize, val: T) {
        unsafe { self.0.add(offset).write(val) }
    }

    /// Returns the raw pointer offset by `offset` elements.
    ///
    /// # Safety
    /// Offset must be in bounds.
    pub(crate) unsafe fn ptr_add(&self, offset: usize) -> *mut T {
        unsafe { self.0.add(offset) }
    }
}

/// Read a float tensor's storage as f32 values, regardless of source dtype.
/// Returns a borrowed slice for F32 (zero-copy) and an owned Vec for other
/// float dtypes (F64, F16, BF16).
///
/// Returns elements in underlying buffer order. Callers needing logical
/// iteration order must call `to_contiguous()` first.
///
/// # Panics
/// Panics if the tensor's dtype is not one of F32, F64, F16, or BF16.
pub(crate) fn float_storage_as_f32(tensor: &FlexTensor) -> Cow<'_, [f32]> {
    match tensor.dtype() {
        DType::F32 => Cow::Borrowed(tensor.storage::<f32>()),
        DType::F64 => Cow::Owned(tensor.storage::<f64>().iter().map(|&x| x as f32).collect()),
        DType::F16 => Cow::Owned(
            tensor
                .storage::<f16>()
                .iter()
                .map(|x| f32::from(*x))
                .collect(),
        ),
        DType::BF16 => Cow::Owned(
            tensor
                .storage::<bf16>()
                .iter()
                .map(|x| f32::from(*x))
                .collect(),
        ),
        other => panic!("float_storage_as_f32: unsupported dtype {:?}", other),
    }
}

pub mod activation;
pub mod attention;
pub mod binary;
mod bool;
pub mod cat;
pub mod comparison;
#[macro_use]
mod conv_common;
pub mod conv;
pub mod conv_transpose;
pub mod cumulative;
pub mod deform_conv;
pub mod expand;
pub mod fft;
pub mod flip;
mod float;
pub mod gather_scatter;
pub mod grid_sample;
mod int;
pub mod interpolate;
pub mod mask;
pub mod matmul;
mod module;
pub mod pool;
mod qtensor;
pub mod reduce;
pub mod repeat_dim;
pub mod slice;
pub mod sort;
mod transaction;
pub mod unary;
pub mod unfold;
