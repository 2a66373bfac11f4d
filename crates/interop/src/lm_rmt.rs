//! Weights shared with booydar/LM-RMT's `MemTransformerLM` (`attn_type 0`,
//! `pytorch/mem_transformer.py`), the official code of the RMT paper and of
//! its Transformer-XL baseline: its state_dict names and layouts mapped onto
//! memlab's modules, both ways, through burn-store.
//!
//! Reading goes through burn-store's own readers (`PytorchStore` for the
//! `torch.save` zip files `train.py` writes, `SafetensorsStore`) and its
//! `apply` with `PyTorchToBurnAdapter` (which transposes `nn.Linear`
//! weights and renames LayerNorm's `weight`/`bias` to `gamma`/`beta`);
//! writing collects the model with `BurnToPyTorchAdapter`. What burn-store
//! cannot express is done here, with the table [`official_keys`]: the names
//! (one table serves import, export and the errors, which must name the
//! official key, so it is written out rather than given to a one-way regex
//! `KeyRemapper`), `qkv_net` (q, k, v stacked along the output dimension,
//! three `Linear`s in memlab), `mem_tokens` (`[m, 1, d]`, memlab `[m, d]`),
//! the tied output weight (its own key in a `.pt`, absent from a
//! `.safetensors`) and the `pos_emb.inv_freq` buffer (fixed by `d_model`,
//! checked, not loaded).

use std::collections::BTreeMap;

use burn::module::Module;
use burn::prelude::*;
use burn_store::TensorSnapshot;

pub use memlab_core::interop::LmRmtLayout;

pub use crate::weights::{OfficialTensor, WeightError as LmRmtError, Weights, read_weights};
use crate::weights::{
    Values, apply_all, check_keys, encode_safetensors, own_snapshots, own_values,
};

/// Where an official key lives in memlab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// One memlab tensor of the same layout (memlab's as
    /// `BurnToPyTorchAdapter` presents it: `Linear` weights `[out, in]`,
    /// LayerNorm `weight`/`bias`).
    Same(String),
    /// `qkv_net.weight`: the query, key and value weights stacked along
    /// the output dimension (`torch.chunk(w_heads, 3, dim=-1)`).
    Stacked([String; 3]),
    /// `mem_tokens` `[m, 1, d]`: memlab's `[m, d]`.
    MemoryTokens(String),
    /// `crit.out_layers.0.weight` of a tied model: the embedding itself.
    TiedOutput(String),
    /// `pos_emb.inv_freq`, `1 / 10000^(2i / d_model)`: a buffer.
    InverseFrequencies,
}

/// Every key of a `MemTransformerLM` state_dict with `attn_type 0`,
/// `cutoffs []`, `d_embed = d_model`, and where memlab keeps it.
pub fn official_keys(layout: &LmRmtLayout) -> Vec<(String, Place)> {
    let embedding = "embedding.embedding.weight".to_string();
    let mut keys = vec![
        (
            "word_emb.emb_layers.0.weight".into(),
            Place::Same(embedding.clone()),
        ),
        ("pos_emb.inv_freq".into(), Place::InverseFrequencies),
        ("r_w_bias".into(), Place::Same("biases.0.u".into())),
        ("r_r_bias".into(), Place::Same("biases.0.v".into())),
    ];
    if let Some(path) = layout.memory_tokens {
        keys.push(("mem_tokens".into(), Place::MemoryTokens(path.into())));
    }
    for i in 0..layout.n_layers {
        let official = |rest: &str| format!("layers.{i}.{rest}");
        let ours = |rest: &str| format!("{}.{i}.{rest}", layout.blocks);
        let attention = |p: &str| ours(&format!("attention.projections.{p}.weight"));
        keys.push((
            official("dec_attn.qkv_net.weight"),
            Place::Stacked([attention("query"), attention("key"), attention("value")]),
        ));
        for (theirs, mine) in [
            ("dec_attn.r_net.weight", "attention.position.weight"),
            (
                "dec_attn.o_net.weight",
                "attention.projections.output.weight",
            ),
            ("dec_attn.layer_norm.weight", "body.norm_attention.weight"),
            ("dec_attn.layer_norm.bias", "body.norm_attention.bias"),
            ("pos_ff.CoreNet.0.weight", "body.feed_forward.inner.weight"),
            ("pos_ff.CoreNet.0.bias", "body.feed_forward.inner.bias"),
            ("pos_ff.CoreNet.3.weight", "body.feed_forward.outer.weight"),
            ("pos_ff.CoreNet.3.bias", "body.feed_forward.outer.bias"),
            ("pos_ff.layer_norm.weight", "body.norm_feed_forward.weight"),
            ("pos_ff.layer_norm.bias", "body.norm_feed_forward.bias"),
        ] {
            keys.push((official(theirs), Place::Same(ours(mine))));
        }
    }
    if layout.tied {
        keys.push((
            "crit.out_layers.0.weight".into(),
            Place::TiedOutput(embedding),
        ));
        keys.push((
            "crit.out_layers.0.bias".into(),
            Place::Same("embedding.head_bias".into()),
        ));
    } else {
        for p in ["weight", "bias"] {
            keys.push((
                format!("crit.out_layers.0.{p}"),
                Place::Same(format!("embedding.head.{p}")),
            ));
        }
    }
    keys
}

/// The official keys an exported `.safetensors` holds: all but the tied
/// output weight, which the official safetensors files do not store twice.
fn stored_in_safetensors(place: &Place) -> bool {
    !matches!(place, Place::TiedOutput(_))
}

/// The `inv_freq` buffer of `PositionalEmbedding(d_model)`, as memlab's
/// sinusoids compute it.
fn inverse_frequencies(d_model: usize) -> Vec<f32> {
    (0..d_model / 2)
        .map(|c| (1.0 / 10000f64.powf(2.0 * c as f64 / d_model as f64)) as f32)
        .collect()
}

/// The official shape of `place`, from memlab's own tensors.
fn official_shape(
    place: &Place,
    own: &BTreeMap<String, TensorSnapshot>,
    d_model: usize,
) -> Option<Vec<usize>> {
    let shape = |p: &str| own.get(p).map(|s| s.shape.to_vec());
    match place {
        Place::Same(p) | Place::TiedOutput(p) => shape(p),
        Place::Stacked(parts) => {
            let [rows, cols] = <[usize; 2]>::try_from(shape(&parts[0])?).ok()?;
            Some(vec![3 * rows, cols])
        }
        Place::MemoryTokens(p) => {
            let [m, d] = <[usize; 2]>::try_from(shape(p)?).ok()?;
            Some(vec![m, 1, d])
        }
        Place::InverseFrequencies => Some(vec![d_model / 2]),
    }
}

/// Loads official weights into `model`: every parameter of the model must
/// come from the file and every key of the file must have its place, with
/// its shape; otherwise an error names the keys.
pub fn load_official<B: Backend, M: Module<B>>(
    model: M,
    layout: &LmRmtLayout,
    weights: &Weights,
) -> Result<M, LmRmtError> {
    let own = own_snapshots::<B, M>(&model);
    let table = official_keys(layout);
    // A `.safetensors` does not store the tied output weight twice.
    check_keys(weights, &table, stored_in_safetensors)?;

    let mut snapshots = Vec::new();
    for (key, place) in &table {
        let Some(snapshot) = weights.get(key) else {
            continue;
        };
        let expected = official_shape(place, &own, layout.d_model).ok_or_else(|| {
            LmRmtError::Unsupported(format!(
                "`{key}` has no counterpart in the memlab model (its place {place:?} is absent)"
            ))
        })?;
        let found = snapshot.shape.to_vec();
        if found != expected {
            return Err(LmRmtError::Shape {
                key: key.clone(),
                expected,
                found,
            });
        }
        let values = Values::of(key, snapshot)?;
        match place {
            Place::Same(path) => snapshots.push(values.snapshot(path)),
            Place::Stacked(parts) => {
                let (rows, cols) = (expected[0] / 3, expected[1]);
                for (n, path) in parts.iter().enumerate() {
                    let block = values.data[n * rows * cols..(n + 1) * rows * cols].to_vec();
                    snapshots.push(
                        Values {
                            shape: vec![rows, cols],
                            data: block,
                        }
                        .snapshot(path),
                    );
                }
            }
            Place::MemoryTokens(path) => snapshots.push(
                Values {
                    shape: vec![expected[0], expected[2]],
                    data: values.data,
                }
                .snapshot(path),
            ),
            Place::TiedOutput(_) => {
                let embedding = Values::of(
                    "word_emb.emb_layers.0.weight",
                    &weights["word_emb.emb_layers.0.weight"],
                )?;
                if embedding.data != values.data {
                    return Err(LmRmtError::Value {
                        key: key.clone(),
                        why: "differs from `word_emb.emb_layers.0.weight`, but the config ties \
                              the output weight to the embedding (`tied_embeddings = true`); \
                              an untied checkpoint needs `tied_embeddings = false`"
                            .into(),
                    });
                }
            }
            Place::InverseFrequencies => {
                let ours = inverse_frequencies(layout.d_model);
                let worst = ours
                    .iter()
                    .zip(&values.data)
                    .map(|(a, b)| ((a - b) / a).abs())
                    .fold(0.0f32, f32::max);
                if worst > 1e-6 {
                    return Err(LmRmtError::Value {
                        key: key.clone(),
                        why: format!(
                            "is not 1 / 10000^(2i / d_model) for d_model = {} (relative \
                             difference {worst:e})",
                            layout.d_model
                        ),
                    });
                }
            }
        }
    }

    // The table above covers the model: an error here is a memlab bug.
    apply_all(model, snapshots, "official")
}

/// The model's weights under the official keys and layouts (all of them
/// but the tied output weight, as an official `.safetensors` holds them).
pub fn official_tensors<B: Backend, M: Module<B>>(
    model: &M,
    layout: &LmRmtLayout,
) -> Result<Vec<OfficialTensor>, LmRmtError> {
    let own = own_snapshots::<B, M>(model);
    let get = |key: &str, path: &str| own_values(&own, key, path);
    let mut out = Vec::new();
    for (key, place) in official_keys(layout) {
        let values = match &place {
            Place::TiedOutput(_) => continue,
            Place::Same(path) => get(&key, path)?,
            Place::Stacked(parts) => {
                let mut data = Vec::new();
                let mut shape = Vec::new();
                for path in parts {
                    let part = get(&key, path)?;
                    data.extend(part.data);
                    shape = part.shape;
                }
                shape[0] *= 3;
                Values { shape, data }
            }
            Place::MemoryTokens(path) => {
                let v = get(&key, path)?;
                Values {
                    shape: vec![v.shape[0], 1, v.shape[1]],
                    data: v.data,
                }
            }
            Place::InverseFrequencies => Values {
                shape: vec![layout.d_model / 2],
                data: inverse_frequencies(layout.d_model),
            },
        };
        debug_assert!(stored_in_safetensors(&place));
        out.push(OfficialTensor {
            key,
            shape: values.shape,
            data: values.data,
        });
    }
    Ok(out)
}

/// The model's weights as the bytes of an official `.safetensors` (f32),
/// the file `load_official` and the official code read; the caller writes
/// them where and how it keeps files (memlab's CLI: atomically).
pub fn encode_official<B: Backend, M: Module<B>>(
    model: &M,
    layout: &LmRmtLayout,
) -> Result<Vec<u8>, LmRmtError> {
    encode_safetensors(
        official_tensors::<B, M>(model, layout)?,
        &[("format", "pt")],
    )
}
