//! Backend selection. ndarray (CPU) is always compiled; wgpu and cuda are
//! cargo features of this crate (`--features wgpu,cuda`).

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;

/// The `--backend` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// CPU, pure Rust (always available).
    Ndarray,
    /// Vulkan / Metal / WebGPU through wgpu (feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs through CUDA (feature `cuda`).
    Cuda,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        })
    }
}

/// Work that is generic over the (autodiff) backend.
pub trait BackendVisitor {
    type Output;
    fn visit<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `visitor` on the chosen backend's default device.
pub fn with_backend<V: BackendVisitor>(kind: BackendKind, visitor: V) -> Result<V::Output> {
    match kind {
        BackendKind::Ndarray => Ok(visitor
            .visit::<Autodiff<burn::backend::NdArray>>(burn::backend::ndarray::NdArrayDevice::Cpu)),
        BackendKind::Wgpu => wgpu(visitor),
        BackendKind::Cuda => cuda(visitor),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu<V: BackendVisitor>(visitor: V) -> Result<V::Output> {
    Ok(visitor.visit::<Autodiff<burn::backend::Wgpu>>(burn::backend::wgpu::WgpuDevice::default()))
}

#[cfg(feature = "cuda")]
fn cuda<V: BackendVisitor>(visitor: V) -> Result<V::Output> {
    Ok(visitor.visit::<Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::default()))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu<V: BackendVisitor>(_: V) -> Result<V::Output> {
    Err(not_compiled(BackendKind::Wgpu))
}

#[cfg(not(feature = "cuda"))]
fn cuda<V: BackendVisitor>(_: V) -> Result<V::Output> {
    Err(not_compiled(BackendKind::Cuda))
}

#[cfg(not(all(feature = "wgpu", feature = "cuda")))]
fn not_compiled(kind: BackendKind) -> anyhow::Error {
    anyhow::anyhow!(
        "this memlab was built without the `{kind}` backend; rebuild with \
         `cargo build --release -p memlab-cli --features {kind}`"
    )
}
