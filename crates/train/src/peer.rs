//! One data-parallel peer's place among those sharing each batch, and the
//! collective operations it takes part in (burn-collective's `all_reduce`:
//! sums, gathers of rows, rank 0's module on every peer). With one peer
//! every operation is the identity. [`crate::distributed`] starts the peers;
//! the training loop takes one.

use std::ops::Range;

use burn::collective::{CollectiveError, PeerId, ReduceOperation, all_reduce};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;

use crate::error::TrainError;

/// One peer's place among those sharing each batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    rank: usize,
    world: usize,
}

/// An error of the collective engine (a peer that stopped ends the others'
/// operations with one).
pub(crate) fn failed(e: CollectiveError) -> TrainError {
    TrainError::Collective(format!("{e:?}"))
}

impl Peer {
    /// The only peer: every collective operation is the identity.
    pub fn solo() -> Self {
        Self { rank: 0, world: 1 }
    }

    /// Peer `rank` of `world`.
    pub(crate) fn new(rank: usize, world: usize) -> Self {
        Self { rank, world }
    }

    /// Rank among all peers (`0..world`).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Peers in all.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Whether this peer writes the run and evaluates (rank 0).
    pub fn writes(&self) -> bool {
        self.rank == 0
    }

    /// This peer's rows of a batch of `batch` rows.
    pub fn rows(&self, batch: usize) -> Range<usize> {
        let share = batch / self.world;
        self.rank * share..(self.rank + 1) * share
    }

    pub(crate) fn id(&self) -> PeerId {
        PeerId::from(self.rank as u32)
    }

    /// The sum over all peers of `tensor` (same shape on every peer).
    pub fn sum<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, TrainError> {
        if self.world == 1 {
            return Ok(tensor);
        }
        let summed = all_reduce::<B>(
            self.id(),
            tensor.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(failed)?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// Every peer's rows of `tensor` along `dim`, put together in rank
    /// order: the whole batch's tensor, on every peer (`batch` rows).
    pub fn gather<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D>,
        dim: usize,
        batch: usize,
    ) -> Result<Tensor<B, D>, TrainError> {
        if self.world == 1 {
            return Ok(tensor);
        }
        let rows = self.rows(batch);
        let device = tensor.device();
        let zeros = |n: usize| {
            let mut dims = tensor.dims();
            dims[dim] = n;
            Tensor::<B, D>::zeros(dims, &device)
        };
        let mut parts = Vec::with_capacity(3);
        if rows.start > 0 {
            parts.push(zeros(rows.start));
        }
        parts.push(tensor.clone());
        if rows.end < batch {
            parts.push(zeros(batch - rows.end));
        }
        self.sum(Tensor::cat(parts, dim))
    }

    /// This peer's rows (along `dim`) of a whole batch's `tensor`.
    pub fn scatter<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D>,
        dim: usize,
    ) -> Tensor<B, D> {
        let rows = self.rows(tensor.dims()[dim]);
        tensor.narrow(dim, rows.start, rows.len())
    }

    /// The gradients of `model`'s parameters summed over all peers.
    ///
    /// Burn's `GradientsParams::all_reduce` sums each parameter's gradient
    /// in an operation of its own; each costs a round of messages through
    /// the collective's server and, between processes, a barrier over the
    /// network. Here every gradient is flattened into one vector (in module
    /// order, the same on every peer), summed in one operation and cut back:
    /// the same sums, element by element.
    pub fn sum_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        if self.world == 1 {
            return Ok(grads);
        }
        struct Flatten<'a, B: AutodiffBackend> {
            grads: &'a GradientsParams,
            parts: Vec<Tensor<B::InnerBackend, 1>>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    let n = g.shape().num_elements();
                    self.parts.push(g.reshape([n]));
                }
            }
        }
        struct Unflatten<'a, B: AutodiffBackend> {
            grads: &'a mut GradientsParams,
            summed: Tensor<B::InnerBackend, 1>,
            offset: usize,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    let shape = g.shape();
                    let n = shape.num_elements();
                    let part = self.summed.clone().narrow(0, self.offset, n);
                    self.offset += n;
                    self.grads
                        .register::<B::InnerBackend, D>(param.id, part.reshape(shape));
                }
            }
        }
        let mut flatten = Flatten::<B> {
            grads: &grads,
            parts: Vec::new(),
        };
        model.visit(&mut flatten);
        if flatten.parts.is_empty() {
            return Ok(grads);
        }
        let summed = self.sum(Tensor::cat(flatten.parts, 0))?;
        let mut grads = grads;
        model.visit(&mut Unflatten::<B> {
            grads: &mut grads,
            summed,
            offset: 0,
        });
        Ok(grads)
    }

    /// `module` with rank 0's parameters on every peer.
    pub fn broadcast<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: M,
    ) -> Result<M, TrainError> {
        if self.world == 1 {
            return Ok(module);
        }
        struct FromRankZero<'a> {
            peer: &'a Peer,
            error: Option<TrainError>,
        }
        impl<B: AutodiffBackend> ModuleMapper<B> for FromRankZero<'_> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let (id, tensor, mapper) = param.consume();
                if self.error.is_some() {
                    return Param::from_mapped_value(id, tensor, mapper);
                }
                let grad = tensor.is_require_grad();
                let inner = tensor.clone().inner();
                let mine = if self.peer.writes() {
                    inner
                } else {
                    inner.zeros_like()
                };
                let value = match self.peer.sum(mine) {
                    Ok(value) => Tensor::from_inner(value),
                    Err(e) => {
                        self.error = Some(e);
                        tensor
                    }
                };
                let value = if grad { value.require_grad() } else { value };
                Param::from_mapped_value(id, value, mapper)
            }
        }
        let mut mapper = FromRankZero {
            peer: self,
            error: None,
        };
        let module = module.map(&mut mapper);
        match mapper.error {
            Some(e) => Err(e),
            None => Ok(module),
        }
    }
}
