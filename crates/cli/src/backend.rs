//! Backend selection. ndarray (CPU) is always compiled; wgpu and cuda are
//! cargo features of this crate (`--features wgpu,cuda`).

use anyhow::{Result, bail};
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

fn not_compiled(kind: BackendKind) -> anyhow::Error {
    anyhow::anyhow!(
        "this memlab was built without the `{kind}` backend; rebuild with \
         `cargo build --release -p memlab-cli --features {kind}`"
    )
}

/// Runs `visitor` on the chosen backend's default device.
pub fn with_backend<V: BackendVisitor>(kind: BackendKind, visitor: V) -> Result<V::Output> {
    use burn::backend::Autodiff;
    match kind {
        BackendKind::Ndarray => Ok(visitor.visit::<Autodiff<burn::backend::NdArray>>(
            burn::backend::ndarray::NdArrayDevice::Cpu,
        )),
        BackendKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok(visitor.visit::<Autodiff<burn::backend::Wgpu>>(
                burn::backend::wgpu::WgpuDevice::default(),
            ));
            #[cfg(not(feature = "wgpu"))]
            bail!(not_compiled(kind))
        }
        BackendKind::Cuda => {
            #[cfg(feature = "cuda")]
            return Ok(visitor.visit::<Autodiff<burn::backend::Cuda>>(
                burn::backend::cuda::CudaDevice::default(),
            ));
            #[cfg(not(feature = "cuda"))]
            bail!(not_compiled(kind))
        }
    }
}
