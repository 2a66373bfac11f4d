//! Backend selection. flex (burn-flex, the CPU default) is always compiled;
//! ndarray (Burn's older CPU backend, for comparison), wgpu and cuda are
//! cargo features of this crate (`--features ndarray,wgpu,cuda`; `vulkan`
//! makes wgpu compile its kernels to SPIR-V). GPU backends run with Burn's
//! kernel fusion and autotune.

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;

/// The `--backend` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// CPU, pure Rust: burn-flex with SIMD and threads (always available).
    Flex,
    /// CPU, Burn's ndarray backend (feature `ndarray`; slower than flex).
    Ndarray,
    /// Vulkan / Metal / WebGPU through wgpu (feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs through CUDA (feature `cuda`), f32.
    Cuda,
    /// CUDA with bf16 parameters and activations (feature `cuda`).
    CudaBf16,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::CudaBf16 => "cuda-bf16",
        })
    }
}

impl BackendKind {
    /// Whether this backend was compiled into this binary.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => true,
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda | BackendKind::CudaBf16 => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this binary.
    pub fn compiled() -> Vec<BackendKind> {
        [
            Self::Flex,
            Self::Ndarray,
            Self::Wgpu,
            Self::Cuda,
            Self::CudaBf16,
        ]
        .into_iter()
        .filter(|k| k.is_compiled())
        .collect()
    }

    /// Whether tensors live in host memory (the CPU backends): the heap's
    /// peak is then the memory a step needs.
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendKind::Flex | BackendKind::Ndarray)
    }

    /// Bytes the backend's memory pool holds on the default device, where
    /// the backend reports it (CubeCL's pools: cuda, wgpu). A pool keeps the
    /// pages it once needed until [`burn::prelude::Backend::memory_cleanup`],
    /// so read after some work it is at least that work's peak.
    pub fn device_memory_reserved(self) -> Option<u64> {
        match self {
            BackendKind::Ndarray | BackendKind::Flex => None,
            BackendKind::Wgpu => wgpu_reserved(),
            BackendKind::Cuda | BackendKind::CudaBf16 => cuda_reserved(),
        }
    }
}

/// Work that is generic over the (autodiff) backend.
pub trait BackendVisitor {
    type Output;
    fn visit<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `visitor` on the chosen backend's default device.
pub fn with_backend<V: BackendVisitor>(kind: BackendKind, visitor: V) -> Result<V::Output> {
    if kind.is_cpu() {
        crate::threads::keep_workers_warm();
    }
    match kind {
        BackendKind::Flex => Ok(visitor.visit::<Autodiff<burn::backend::Flex>>(Default::default())),
        BackendKind::Ndarray => ndarray(visitor),
        BackendKind::Wgpu => wgpu(visitor),
        BackendKind::Cuda => cuda(visitor),
        BackendKind::CudaBf16 => cuda_bf16(visitor),
    }
}

#[cfg(feature = "ndarray")]
fn ndarray<V: BackendVisitor>(visitor: V) -> Result<V::Output> {
    Ok(visitor.visit::<Autodiff<burn::backend::NdArray>>(Default::default()))
}

#[cfg(not(feature = "ndarray"))]
fn ndarray<V: BackendVisitor>(_: V) -> Result<V::Output> {
    Err(not_compiled(BackendKind::Ndarray))
}

#[cfg(feature = "wgpu")]
fn wgpu<V: BackendVisitor>(visitor: V) -> Result<V::Output> {
    Ok(visitor.visit::<Autodiff<burn::backend::Wgpu>>(burn::backend::wgpu::WgpuDevice::default()))
}

#[cfg(feature = "wgpu")]
fn wgpu_reserved() -> Option<u64> {
    use burn_cubecl::cubecl::Runtime;
    let client = burn_wgpu::WgpuRuntime::client(&burn_wgpu::WgpuDevice::default());
    client.memory_usage().ok().map(|u| u.bytes_reserved)
}

#[cfg(feature = "cuda")]
fn cuda<V: BackendVisitor>(visitor: V) -> Result<V::Output> {
    Ok(visitor.visit::<Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::default()))
}

#[cfg(feature = "cuda")]
fn cuda_bf16<V: BackendVisitor>(visitor: V) -> Result<V::Output> {
    Ok(
        visitor.visit::<Autodiff<burn::backend::Cuda<burn::tensor::bf16>>>(
            burn::backend::cuda::CudaDevice::default(),
        ),
    )
}

#[cfg(feature = "cuda")]
fn cuda_reserved() -> Option<u64> {
    use burn_cubecl::cubecl::Runtime;
    let client = burn_cubecl::cubecl::cuda::CudaRuntime::client(&Default::default());
    client.memory_usage().ok().map(|u| u.bytes_reserved)
}

#[cfg(not(feature = "wgpu"))]
fn wgpu<V: BackendVisitor>(_: V) -> Result<V::Output> {
    Err(not_compiled(BackendKind::Wgpu))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_reserved() -> Option<u64> {
    None
}

#[cfg(not(feature = "cuda"))]
fn cuda<V: BackendVisitor>(_: V) -> Result<V::Output> {
    Err(not_compiled(BackendKind::Cuda))
}

#[cfg(not(feature = "cuda"))]
fn cuda_bf16<V: BackendVisitor>(_: V) -> Result<V::Output> {
    Err(not_compiled(BackendKind::CudaBf16))
}

#[cfg(not(feature = "cuda"))]
fn cuda_reserved() -> Option<u64> {
    None
}

#[cfg(not(all(feature = "ndarray", feature = "wgpu", feature = "cuda")))]
fn not_compiled(kind: BackendKind) -> anyhow::Error {
    let feature = match kind {
        BackendKind::Ndarray => "ndarray",
        BackendKind::Wgpu => "wgpu",
        _ => "cuda",
    };
    anyhow::anyhow!(
        "this memlab was built without the `{kind}` backend; rebuild with \
         `cargo build --release -p memlab-cli --features {feature}`"
    )
}
