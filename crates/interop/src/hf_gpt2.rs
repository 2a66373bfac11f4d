//! Hugging Face's GPT-2 (`transformers`' `GPT2LMHeadModel` and
//! `GPT2Model`): the keys and layouts of its `model.safetensors` mapped onto
//! memlab-gpt2's modules, both ways, and its `config.json` read into (and
//! written from) the `[model]` table of `arch = "gpt2"`, whose fields carry
//! `GPT2Config`'s own names.
//!
//! What burn-store cannot express is done with the table [`hf_keys`]: the
//! names (`transformer.h.{i}.attn.c_attn.weight`, or without the
//! `transformer.` prefix in a `GPT2Model` file such as the hub's `gpt2`),
//! GPT-2's `Conv1D` weights (`[in, out]`, the transpose of `nn.Linear`'s),
//! `c_attn` (query, key and value side by side along the output dimension:
//! three `Linear`s in memlab), the tied `lm_head.weight` (absent from a
//! `save_pretrained` file) and the causal-mask buffers older files hold
//! (`attn.bias`, `attn.masked_bias`: no weights, accepted and left).
//!
//! The ∞-former's fine-tuning code (deep-spin/infinite-former,
//! `finetune_gpt2/`) saves GPT-2 with its long-term memory in the same
//! format: the settings as extra keys of `config.json`
//! ([`OfficialLongTerm`]) and each block's memory under
//! `h.{i}.attn.long_term_attention.` ([`long_term_keys`]), which load into
//! memlab-gpt2's `gpt2-ltm`.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::weights::{
    OfficialTensor, Values, apply_all_but, check_keys, encode_safetensors, own_snapshots,
    own_values,
};
pub use crate::weights::{WeightError, Weights, read_weights};

/// The fields of `config.json` (Hugging Face's `GPT2Config`) that decide
/// what GPT-2 computes, with `GPT2Config`'s defaults; the others
/// (`architectures`, token ids, generation settings) are not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HfGpt2Config {
    pub model_type: String,
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: Option<usize>,
    pub activation_function: String,
    pub resid_pdrop: f64,
    pub embd_pdrop: f64,
    pub attn_pdrop: f64,
    pub layer_norm_epsilon: f64,
    pub initializer_range: f64,
    pub tie_word_embeddings: bool,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    pub add_cross_attention: bool,
}

impl Default for HfGpt2Config {
    fn default() -> Self {
        Self {
            model_type: "gpt2".into(),
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: "gelu_new".into(),
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
            tie_word_embeddings: true,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            add_cross_attention: false,
        }
    }
}

impl HfGpt2Config {
    /// Reads `config.json`; every setting memlab does not compute is an
    /// error naming it.
    pub fn read(path: &Path) -> Result<Self, WeightError> {
        let config: Self = read_json(path, "is not a GPT-2 config.json")?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), WeightError> {
        let unsupported = |field: &str, why: &str| {
            Err(WeightError::Unsupported(format!(
                "config.json: `{field}` {why}"
            )))
        };
        // The ∞-former's fine-tuning fork of transformers (4.5.0.dev0)
        // names its GPT2Config's model_type "gpt2-medium", whatever the size.
        if self.model_type != "gpt2" && self.model_type != "gpt2-medium" {
            return unsupported(
                "model_type",
                &format!("is {:?}; memlab reads GPT-2 (\"gpt2\")", self.model_type),
            );
        }
        if self.activation().is_none() {
            return unsupported(
                "activation_function",
                &format!(
                    "is {:?}; memlab has gelu_new (gelu_pytorch_tanh), gelu and relu",
                    self.activation_function
                ),
            );
        }
        if !self.tie_word_embeddings {
            return unsupported(
                "tie_word_embeddings",
                "is false; memlab's GPT-2 ties its head",
            );
        }
        if !self.scale_attn_weights {
            return unsupported("scale_attn_weights", "is false; memlab scales by 1/√d_head");
        }
        if self.scale_attn_by_inverse_layer_idx {
            return unsupported("scale_attn_by_inverse_layer_idx", "is true");
        }
        if self.add_cross_attention {
            return unsupported("add_cross_attention", "is true");
        }
        Ok(())
    }

    /// memlab's name of the activation (`gelu_pytorch_tanh` is `gelu_new`
    /// computed by PyTorch's kernel).
    fn activation(&self) -> Option<&'static str> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => Some("gelu_new"),
            "gelu" => Some("gelu"),
            "relu" => Some("relu"),
            _ => None,
        }
    }

    /// The `[model]` table of `arch = "gpt2"` for this model.
    pub fn model_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("arch".into(), "gpt2".into());
        let int = |v: usize| toml::Value::Integer(v as i64);
        t.insert("n_layer".into(), int(self.n_layer));
        t.insert("n_embd".into(), int(self.n_embd));
        t.insert("n_head".into(), int(self.n_head));
        if let Some(inner) = self.n_inner {
            t.insert("n_inner".into(), int(inner));
        }
        t.insert("n_positions".into(), int(self.n_positions));
        t.insert("layer_norm_epsilon".into(), self.layer_norm_epsilon.into());
        t.insert(
            "activation_function".into(),
            self.activation().unwrap_or("gelu_new").into(),
        );
        t.insert("resid_pdrop".into(), self.resid_pdrop.into());
        t.insert("embd_pdrop".into(), self.embd_pdrop.into());
        t.insert("attn_pdrop".into(), self.attn_pdrop.into());
        t.insert("initializer_range".into(), self.initializer_range.into());
        t
    }

    /// The config of a `[model]` table of `arch = "gpt2"` (its fields are
    /// `GPT2Config`'s) over `vocab_size` tokens, as `config.json` holds it.
    pub fn from_model_table(table: &toml::Table, vocab_size: usize) -> Result<Self, WeightError> {
        let mut fields = table.clone();
        fields.remove("arch");
        fields.remove("label");
        let json = serde_json::to_value(fields).map_err(|e| {
            WeightError::Unsupported(format!("the [model] table cannot be written as JSON: {e}"))
        })?;
        let mut config: Self = serde_json::from_value(json).map_err(|e| {
            WeightError::Unsupported(format!("the [model] table is not GPT-2's: {e}"))
        })?;
        config.vocab_size = vocab_size;
        config.check()?;
        Ok(config)
    }

    /// `config.json` as `GPT2LMHeadModel.from_pretrained` reads it.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a config serializes");
        if let serde_json::Value::Object(map) = &mut value {
            map.insert(
                "architectures".into(),
                serde_json::json!(["GPT2LMHeadModel"]),
            );
            // `GPT2Config`'s default token ids (50256) name GPT-2's own
            // vocabulary's end-of-text; a smaller vocabulary has none.
            let end = (self.vocab_size == 50257).then_some(50256);
            map.insert("bos_token_id".into(), serde_json::json!(end));
            map.insert("eos_token_id".into(), serde_json::json!(end));
        }
        serde_json::to_string_pretty(&value).expect("a config serializes") + "\n"
    }
}

/// `config.json` at `path` read as `T`; `what` says what it is not.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, WeightError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        WeightError::Read(format!(
            "cannot read the model config {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| WeightError::Read(format!("{} {what}: {e}", path.display())))
}

/// The long-term memory's keys of a `config.json` written by the
/// ∞-former's fine-tuning code (`infinite_memory_transformer_sticky_mem/
/// config.json`; its `GPT2Config` keeps them as attributes). Its
/// `LongTermAttention` fixes the rest: widths 0.005 and 0.01, 512 samples,
/// ridge penalty 0.5, τ = 0.5, σ² ≥ 1e-4, 128 sticky bins, the memory
/// restarted every 2,048 tokens; `--kl_m` (the KL's weight) is a training
/// argument, not in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct OfficialLongTerm {
    pub long_term_attention: bool,
    pub long_term_attention_basis: usize,
    pub long_term_attention_norm: String,
    pub continuous: bool,
    pub infinite_memory: bool,
    pub affines: bool,
    pub mask: bool,
    pub mask_type: String,
    pub mask_dropout: f64,
    pub kl_regularizer: bool,
    pub sigma_0: f64,
    pub mu_0: f64,
    pub sticky_memories: bool,
}

impl Default for OfficialLongTerm {
    /// `configuration_gpt2_inftyformer.py`'s defaults.
    fn default() -> Self {
        Self {
            long_term_attention: false,
            long_term_attention_basis: 512,
            long_term_attention_norm: "softmax".into(),
            continuous: true,
            infinite_memory: false,
            affines: true,
            mask: false,
            mask_type: "cnn".into(),
            mask_dropout: 0.1,
            kl_regularizer: false,
            sigma_0: 0.05,
            mu_0: -1.0,
            sticky_memories: false,
        }
    }
}

impl OfficialLongTerm {
    /// The settings in `config.json` at `path`, when it has a long-term
    /// memory (`long_term_attention = true`); a variant memlab does not
    /// compute is an error naming its key.
    pub fn read(path: &Path) -> Result<Option<Self>, WeightError> {
        let config: Self = read_json(path, "holds no long-term memory settings memlab reads")?;
        if !config.long_term_attention {
            return Ok(None);
        }
        let unsupported = |field: &str, why: &str| {
            Err(WeightError::Unsupported(format!(
                "config.json: `{field}` {why}; memlab's gpt2-ltm computes the continuous \
                 softmax attention over an unbounded memory (affines, softmax, infinite_memory)"
            )))
        };
        if !config.continuous {
            return unsupported("continuous", "is false (discrete attention)");
        }
        if !config.affines {
            return unsupported("affines", "is false");
        }
        if config.long_term_attention_norm != "softmax" {
            return unsupported(
                "long_term_attention_norm",
                &format!("is {:?}", config.long_term_attention_norm),
            );
        }
        if !config.infinite_memory {
            return unsupported("infinite_memory", "is false (the memory of one block)");
        }
        if config.mask && config.mask_type != "cnn" {
            return unsupported("mask_type", &format!("is {:?}", config.mask_type));
        }
        if config.mask && config.mask_dropout > 0.0 {
            return unsupported(
                "mask_dropout",
                &format!(
                    "is {} (memlab has no dropout on the memory's input)",
                    config.mask_dropout
                ),
            );
        }
        Ok(Some(config))
    }

    /// The fields of `[model.long_term]` of `arch = "gpt2-ltm"` that the
    /// file sets (memlab-infinity-former's `LongTermSettings`); the rest,
    /// what the official `LongTermAttention` fixes, are `gpt2-ltm`'s
    /// defaults (`Gpt2LtmConfig::official_long_term`), kept in one place.
    pub fn long_term_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert(
            "num_basis".into(),
            toml::Value::Integer(self.long_term_attention_basis as i64),
        );
        t.insert("gate".into(), self.mask.into());
        t.insert("sticky".into(), self.sticky_memories.into());
        if !self.kl_regularizer {
            t.insert("kl_weight".into(), 0.0.into());
        }
        t.insert("sigma_0".into(), self.sigma_0.into());
        t.insert("mu_0".into(), self.mu_0.into());
        t
    }
}

/// The keys of each block's long-term memory in an ∞-former GPT-2 file
/// (`{prefix}h.{i}.attn.long_term_attention.*`, `nn.Linear` and
/// `nn.Conv1d` weights, PyTorch's layout as memlab's) and their place in
/// `gpt2-ltm` (`long_term.{i}.*`). `proj_query` is a parameter the
/// official forward never uses: accepted, not loaded.
pub fn long_term_keys(n_layer: usize, prefix: &str) -> Vec<(String, Place)> {
    let mut keys = Vec::new();
    for i in 0..n_layer {
        let theirs = |rest: &str| format!("{prefix}h.{i}.attn.long_term_attention.{rest}");
        let ours = |rest: &str| Place::Same(format!("long_term.{i}.{rest}"));
        for (hf, mine) in [
            ("proj_key.weight", "key.weight"),
            ("proj_value.weight", "value.weight"),
            ("attn_out.weight", "output.weight"),
            ("mu.weight", "mu.weight"),
            ("sigma.weight", "sigma.weight"),
        ] {
            keys.push((theirs(hf), ours(mine)));
        }
        keys.push((theirs("proj_query.weight"), Place::Buffer));
    }
    keys
}

/// The gate's keys (`mask_net`, present when the official `mask` is on).
fn gate_keys(n_layer: usize, prefix: &str) -> Vec<(String, Place)> {
    (0..n_layer)
        .flat_map(|i| {
            ["weight", "bias"].map(|p| {
                (
                    format!("{prefix}h.{i}.attn.long_term_attention.mask_net.{p}"),
                    Place::Same(format!("long_term.{i}.gate.{p}")),
                )
            })
        })
        .collect()
}

/// Where a Hugging Face key lives in memlab-gpt2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// One memlab tensor of the same layout (an embedding, a LayerNorm's
    /// `weight`/`bias` as `BurnToPyTorchAdapter` names them, a bias).
    Same(String),
    /// A `Conv1D` weight `[in, out]`: memlab's `Linear`, whose PyTorch
    /// layout is `[out, in]`.
    Conv1d(String),
    /// `c_attn.weight` `[d, 3d]`: the query, key and value weights side by
    /// side along the output dimension.
    Conv1dStacked([String; 3]),
    /// `c_attn.bias` `[3d]`: the three biases one after another.
    BiasStacked([String; 3]),
    /// `lm_head.weight`: the token embedding itself (GPT-2 ties it).
    TiedHead(String),
    /// `attn.bias` (the causal mask) and `attn.masked_bias`: buffers, not
    /// weights; memlab builds its own mask.
    Buffer,
}

/// Every key of a GPT-2 state_dict of `n_layer` blocks under `prefix`
/// (`transformer.` in `GPT2LMHeadModel`, empty in `GPT2Model`), and where
/// memlab keeps it: in memlab-gpt2's `Gpt2` at `module` (empty for the
/// `gpt2` architecture, `gpt2.` for `gpt2-rmt`, which holds one).
pub fn hf_keys(n_layer: usize, prefix: &str, module: &str) -> Vec<(String, Place)> {
    let key = |rest: &str| format!("{prefix}{rest}");
    let at = |path: &str| format!("{module}{path}");
    let embedding = at("embedding.embedding.weight");
    let mut keys = vec![
        (key("wte.weight"), Place::Same(embedding.clone())),
        (
            key("wpe.weight"),
            Place::Same(at("positions.learned.weight")),
        ),
        (key("ln_f.weight"), Place::Same(at("final_norm.weight"))),
        (key("ln_f.bias"), Place::Same(at("final_norm.bias"))),
    ];
    for i in 0..n_layer {
        let theirs = |rest: &str| key(&format!("h.{i}.{rest}"));
        let ours = |rest: &str| at(&format!("blocks.{i}.{rest}"));
        let qkv = |p: &str| ["query", "key", "value"].map(|q| ours(&format!("attention.{q}.{p}")));
        keys.push((
            theirs("attn.c_attn.weight"),
            Place::Conv1dStacked(qkv("weight")),
        ));
        keys.push((theirs("attn.c_attn.bias"), Place::BiasStacked(qkv("bias"))));
        for (hf, mine) in [
            ("attn.c_proj", "attention.output"),
            ("mlp.c_fc", "body.feed_forward.inner"),
            ("mlp.c_proj", "body.feed_forward.outer"),
        ] {
            keys.push((
                theirs(&format!("{hf}.weight")),
                Place::Conv1d(ours(&format!("{mine}.weight"))),
            ));
            keys.push((
                theirs(&format!("{hf}.bias")),
                Place::Same(ours(&format!("{mine}.bias"))),
            ));
        }
        for (hf, mine) in [
            ("ln_1", "body.norm_attention"),
            ("ln_2", "body.norm_feed_forward"),
        ] {
            for p in ["weight", "bias"] {
                keys.push((
                    theirs(&format!("{hf}.{p}")),
                    Place::Same(ours(&format!("{mine}.{p}"))),
                ));
            }
        }
        keys.push((theirs("attn.bias"), Place::Buffer));
        keys.push((theirs("attn.masked_bias"), Place::Buffer));
    }
    keys.push(("lm_head.weight".into(), Place::TiedHead(embedding)));
    keys
}

/// Whether a key must be in a file: the tied head and the buffers may be
/// absent (`save_pretrained` writes neither).
fn required(place: &Place) -> bool {
    !matches!(place, Place::TiedHead(_) | Place::Buffer)
}

/// The prefix of a file's keys: `transformer.` for `GPT2LMHeadModel`, none
/// for `GPT2Model`.
fn prefix_of(weights: &Weights) -> &'static str {
    if weights.keys().any(|k| k.starts_with("transformer.")) {
        "transformer."
    } else {
        ""
    }
}

/// `[rows, cols]` row-major as `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Loads Hugging Face GPT-2 weights into `model`, whose memlab-gpt2 `Gpt2`
/// of `n_layer` blocks sits at `module` (see [`hf_keys`]): every parameter
/// of that GPT-2 must come from the file and every key of the file must
/// have its place, with its shape; otherwise an error names the keys. The
/// model's parameters outside `module` (a memory's new embeddings) keep
/// their initial values.
pub fn load_hf<B: Backend, M: Module<B>>(
    model: M,
    n_layer: usize,
    module: &str,
    weights: &Weights,
) -> Result<M, WeightError> {
    let own = own_snapshots::<B, M>(&model);
    let prefix = prefix_of(weights);
    let mut table = hf_keys(n_layer, prefix, module);
    // An ∞-former GPT-2: its long-term memory too, every key of it.
    let long_term = weights
        .keys()
        .any(|k| k.contains(".attn.long_term_attention."));
    if long_term {
        if !own.keys().any(|k| k.starts_with("long_term.")) {
            return Err(WeightError::Unsupported(
                "the file holds the ∞-former's long-term memory \
                 (`h.{i}.attn.long_term_attention.*`); load it into arch = \"gpt2-ltm\""
                    .into(),
            ));
        }
        table.extend(long_term_keys(n_layer, prefix));
        if weights
            .keys()
            .any(|k| k.contains(".long_term_attention.mask_net."))
        {
            table.extend(gate_keys(n_layer, prefix));
        }
    }
    check_keys(weights, &table, required)?;
    let shape_of = |path: &str| -> Result<Vec<usize>, WeightError> {
        own.get(path).map(|s| s.shape.to_vec()).ok_or_else(|| {
            WeightError::Unsupported(format!("the memlab model has no `{path}` (not a GPT-2?)"))
        })
    };
    let check_shape = |key: &str, expected: Vec<usize>, found: &[usize]| {
        if found == expected.as_slice() {
            Ok(())
        } else {
            Err(WeightError::Shape {
                key: key.into(),
                expected,
                found: found.to_vec(),
            })
        }
    };

    let mut snapshots = Vec::new();
    for (key, place) in &table {
        let Some(snapshot) = weights.get(key) else {
            continue;
        };
        let found = snapshot.shape.to_vec();
        match place {
            Place::Buffer => {}
            Place::Same(path) => {
                check_shape(key, shape_of(path)?, &found)?;
                snapshots.push(Values::of(key, snapshot)?.snapshot(path));
            }
            Place::Conv1d(path) => {
                // memlab's [out, in] (PyTorch's layout) is Conv1D's [in, out].
                let [out, inp] = <[usize; 2]>::try_from(shape_of(path)?)
                    .map_err(|_| WeightError::Unsupported(format!("`{path}` is not a matrix")))?;
                check_shape(key, vec![inp, out], &found)?;
                let values = Values::of(key, snapshot)?;
                snapshots.push(
                    Values {
                        shape: vec![out, inp],
                        data: transpose(&values.data, inp, out),
                    }
                    .snapshot(path),
                );
            }
            Place::Conv1dStacked(parts) => {
                let [out, inp] = <[usize; 2]>::try_from(shape_of(&parts[0])?).map_err(|_| {
                    WeightError::Unsupported(format!("`{}` is not a matrix", parts[0]))
                })?;
                check_shape(key, vec![inp, 3 * out], &found)?;
                // [in, 3 out] transposed is [3 out, in]: q, k, v one under
                // another.
                let stacked = transpose(&Values::of(key, snapshot)?.data, inp, 3 * out);
                for (n, path) in parts.iter().enumerate() {
                    snapshots.push(
                        Values {
                            shape: vec![out, inp],
                            data: stacked[n * out * inp..(n + 1) * out * inp].to_vec(),
                        }
                        .snapshot(path),
                    );
                }
            }
            Place::BiasStacked(parts) => {
                let out = shape_of(&parts[0])?[0];
                check_shape(key, vec![3 * out], &found)?;
                let values = Values::of(key, snapshot)?;
                for (n, path) in parts.iter().enumerate() {
                    snapshots.push(
                        Values {
                            shape: vec![out],
                            data: values.data[n * out..(n + 1) * out].to_vec(),
                        }
                        .snapshot(path),
                    );
                }
            }
            Place::TiedHead(path) => {
                check_shape(key, shape_of(path)?, &found)?;
                let wte = format!("{}wte.weight", prefix_of(weights));
                if Values::of(key, snapshot)?.data != Values::of(&wte, &weights[&wte])?.data {
                    return Err(WeightError::Value {
                        key: key.clone(),
                        why: format!(
                            "differs from `{wte}`; memlab's GPT-2 ties its head to the embedding"
                        ),
                    });
                }
            }
        }
    }
    // What the file does not hold keeps its initial values: a memory's new
    // parameters; but a file with the long-term memory must hold all of it.
    apply_all_but(model, snapshots, "Hugging Face GPT-2", |path| {
        let loaded = module.is_empty()
            || path.starts_with(module)
            || (long_term && path.starts_with("long_term."));
        !loaded
    })
}

/// The model's weights under `GPT2LMHeadModel`'s keys and layouts, as
/// `save_pretrained` writes them (the tied head once, as `wte`; no buffer).
pub fn hf_tensors<B: Backend, M: Module<B>>(
    model: &M,
    n_layer: usize,
) -> Result<Vec<OfficialTensor>, WeightError> {
    let own = own_snapshots::<B, M>(model);
    let get = |key: &str, path: &str| own_values(&own, key, path);
    let mut out = Vec::new();
    for (key, place) in hf_keys(n_layer, "transformer.", "") {
        let values = match &place {
            Place::TiedHead(_) | Place::Buffer => continue,
            Place::Same(path) => get(&key, path)?,
            Place::Conv1d(path) => {
                let v = get(&key, path)?;
                let (rows, cols) = (v.shape[0], v.shape[1]);
                Values {
                    shape: vec![cols, rows],
                    data: transpose(&v.data, rows, cols),
                }
            }
            Place::Conv1dStacked(parts) => {
                let mut stacked = Vec::new();
                let (mut rows, mut cols) = (0, 0);
                for path in parts {
                    let part = get(&key, path)?;
                    rows += part.shape[0];
                    cols = part.shape[1];
                    stacked.extend(part.data);
                }
                Values {
                    shape: vec![cols, rows],
                    data: transpose(&stacked, rows, cols),
                }
            }
            Place::BiasStacked(parts) => {
                let mut data = Vec::new();
                for path in parts {
                    data.extend(get(&key, path)?.data);
                }
                Values {
                    shape: vec![data.len()],
                    data,
                }
            }
        };
        out.push(OfficialTensor {
            key,
            shape: values.shape,
            data: values.data,
        });
    }
    Ok(out)
}

/// The model's weights as the bytes of the `model.safetensors` that
/// `GPT2LMHeadModel.from_pretrained` reads (beside [`HfGpt2Config::to_json`]).
pub fn encode_hf<B: Backend, M: Module<B>>(
    model: &M,
    n_layer: usize,
) -> Result<Vec<u8>, WeightError> {
    encode_safetensors(hf_tensors::<B, M>(model, n_layer)?, &[("format", "pt")])
}
