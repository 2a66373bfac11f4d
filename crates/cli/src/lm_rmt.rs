//! `memlab import --from lm-rmt`, `memlab export --to lm-rmt` and `memlab
//! parity`: weights shared with booydar/LM-RMT's `MemTransformerLM`
//! ([`memlab_interop::lm_rmt`] maps them) and the check that memlab computes
//! what the official code computes, on the cases it produced
//! (`../shared/parity/`, format in its README).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::backend::{Autodiff, Flex};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use memlab_core::registry::parse_model_config;
use memlab_core::{
    Architecture, ArchitectureVisitor, ExperimentConfig, MemoryState, ModelContext, ModelSpec,
    SegmentModel, Task,
};
use memlab_interop::lm_rmt::{LmRmtLayout, Weights, encode_official, load_official, read_weights};
use memlab_train::checkpoint::{CHECKPOINT_FILE, Checkpoint, write_atomically};
use memlab_train::run_dir::run_dir;
use memlab_train::step::optimizer_config;
use serde::{Deserialize, Serialize};

use crate::{
    BackendKind, LoadedRun, ModelJob, RunModelJob, build_task, registry, run_job, with_run_model,
};

/// The largest relative error `memlab parity` accepts (f32).
pub const PARITY_TOLERANCE: f64 = 1e-4;

pub(crate) type CpuAutodiff = Autodiff<Flex>;

/// The layout of `A` under `config`, as an error when it has none.
fn layout<A: Architecture>(config: &A::Config) -> Result<LmRmtLayout> {
    A::lm_rmt_layout(config).map_err(|why| anyhow!("no LM-RMT counterpart: {why}"))
}

// ---------------------------------------------------------------- import

/// What `memlab import` did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub run_dir: PathBuf,
    pub arch: String,
    pub tensors: usize,
    pub parameters: usize,
}

/// `memlab import --from lm-rmt`: loads official weights into the model the
/// config describes and writes a run directory (`config.toml`, the task's
/// files, a step-0 checkpoint with a fresh optimizer) that `memlab eval`,
/// `generate` and `train --resume` read.
pub fn run_import(weights: &Path, config: &Path, out: &Path) -> Result<ImportReport> {
    let mut config = ExperimentConfig::load(config, &[])?;
    let dir = import_target(&mut config, out)?;
    let task = build_task(&config)?;
    let spec = ModelSpec::from_table(config.model_table()?, "model")?;
    let snapshots = read_weights(weights)?;

    struct Import<'a> {
        config: &'a ExperimentConfig,
        spec: &'a ModelSpec,
        ctx: ModelContext,
        snapshots: &'a Weights,
        dir: &'a Path,
        task: &'a dyn Task,
    }
    impl ArchitectureVisitor for Import<'_> {
        type Output = Result<ImportReport>;
        fn visit<A: Architecture>(self) -> Result<ImportReport> {
            let model_config = parse_model_config::<A>(self.spec.fields.clone(), &self.ctx)?;
            let layout = layout::<A>(&model_config)?;
            let device = Default::default();
            let model = A::init_train::<CpuAutodiff>(&model_config, &self.ctx, &device);
            let model = load_official::<CpuAutodiff, _>(model, &layout, self.snapshots)?;
            write_imported_run::<A>(self.dir, self.config, &model, self.task)?;
            Ok(ImportReport {
                run_dir: self.dir.to_path_buf(),
                arch: A::NAME.into(),
                tensors: self.snapshots.len(),
                parameters: model.num_params(),
            })
        }
    }
    let ctx = ModelContext::of(&config, task.as_ref());
    let report = registry::dispatch(
        &spec.arch,
        Import {
            config: &config,
            spec: &spec,
            ctx,
            snapshots: &snapshots,
            dir: &dir,
            task: task.as_ref(),
        },
    )??;
    Ok(report)
}

/// Points `config`'s run at `out` (its name and folder: `train --resume
/// --config out/config.toml` then continues there) and returns the run
/// directory; an error when it already holds a checkpoint.
pub(crate) fn import_target(config: &mut ExperimentConfig, out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("--out {} must name a directory", out.display()))?;
    config.run.name = name.to_string();
    config.run.out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ => ".".into(),
    };
    let dir = run_dir(config);
    if dir.join(CHECKPOINT_FILE).exists() {
        bail!(
            "{} already holds a checkpoint; import into a new directory",
            dir.display()
        );
    }
    Ok(dir)
}

/// Writes an imported model as a run directory: `config.toml`, a step-0
/// checkpoint with a fresh optimizer, the task's files.
pub(crate) fn write_imported_run<A: Architecture>(
    dir: &Path,
    config: &ExperimentConfig,
    model: &A::TrainModel<CpuAutodiff>,
    task: &dyn Task,
) -> Result<()> {
    let optimizer =
        optimizer_config(&config.train).init::<CpuAutodiff, A::TrainModel<CpuAutodiff>>();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let toml = config.to_toml();
    write_atomically(&dir.join("config.toml"), toml.as_bytes())?;
    Checkpoint::new::<CpuAutodiff, _, _>(A::NAME, 0, toml, model, optimizer.to_record())?
        .save(&dir.join(CHECKPOINT_FILE))?;
    for (name, contents) in task.artifacts() {
        write_atomically(&dir.join(&name), contents.as_bytes())?;
    }
    Ok(())
}

// ---------------------------------------------------------------- export

/// `memlab export --to lm-rmt`: writes a run's model as an official
/// `.safetensors` (the official keys and layouts; a tied output weight is
/// not stored twice, as in the official files).
pub fn run_export(run: &Path, out: &Path) -> Result<String> {
    if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("--out {} must end in .safetensors", out.display());
    }
    let loaded = LoadedRun::open(run)?;
    struct Export<'a> {
        out: &'a Path,
    }
    impl RunModelJob for Export<'_> {
        type Output = String;
        fn run<A: Architecture, B: Backend>(
            self,
            model: &A::Model<B>,
            config: &A::Config,
            _: &LoadedRun,
            _: &B::Device,
        ) -> Result<String> {
            let bytes = encode_official::<B, _>(model, &layout::<A>(config)?)?;
            write_atomically(self.out, &bytes)
                .with_context(|| format!("writing {}", self.out.display()))?;
            Ok(A::NAME.to_string())
        }
    }
    // Weights are the same on every backend: read them on the CPU.
    let (_, arch) = with_run_model(&loaded, BackendKind::Flex, Export { out })?;
    Ok(arch)
}

// ---------------------------------------------------------------- parity

/// A case's `config` (`../shared/parity/README.md`): the sizes, plus any
/// other argument of `MemTransformerLM` under its own name, with the
/// official defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaseConfig {
    pub name: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_model: usize,
    pub d_head: usize,
    pub d_inner: usize,
    /// `n_token`.
    pub vocab: usize,
    /// Tokens per segment (`tgt_len`).
    pub seg: usize,
    pub batch: usize,
    pub mem_len: usize,
    pub num_mem_tokens: usize,
    pub pre_lnorm: bool,
    pub same_length: bool,
    /// `-1` (or any value ≤ 0): no clamping.
    pub clamp_len: i64,
    pub segments: usize,
    pub seed: u64,
    #[serde(default = "yes")]
    pub mem_at_end: bool,
    #[serde(default)]
    pub read_mem_from_cache: bool,
    #[serde(default = "yes")]
    pub tie_weight: bool,
    #[serde(default)]
    pub ext_len: usize,
    #[serde(default)]
    pub attn_type: usize,
    /// Dropout is off in eval mode, where the cases are computed.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub dropatt: f64,
    pub d_embed: Option<usize>,
    #[serde(default = "one")]
    pub div_val: usize,
    #[serde(default)]
    pub cutoffs: Vec<usize>,
    #[serde(default = "minus_one")]
    pub sample_softmax: i64,
    pub tgt_len: Option<usize>,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn minus_one() -> i64 {
    -1
}

/// One segment of a case: what the official code read and computed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSegment {
    /// `[seg][batch]` token ids.
    pub input: Vec<Vec<i64>>,
    pub target: Vec<Vec<i64>>,
    /// `[seg][batch]`.
    pub nll: Vec<Vec<f64>>,
    /// `[num_mem][batch][d_model]`.
    pub mem_tokens: Option<Vec<Vec<Vec<f64>>>>,
    /// `[n_layer + 1][mem][batch][d_model]`.
    pub cache: Option<Vec<Vec<Vec<Vec<f64>>>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub config: CaseConfig,
    pub segments: Vec<CaseSegment>,
}

impl CaseConfig {
    /// The memlab `[model]` table of this `MemTransformerLM`, or why there
    /// is none.
    pub fn model_table(&self) -> Result<toml::Table> {
        let unsupported = |what: &str| Err(anyhow!("case {}: {what}", self.name));
        if self.attn_type != 0 {
            return unsupported("only attn_type 0 (relative positions) has a memlab counterpart");
        }
        if self.ext_len != 0 {
            return unsupported("ext_len > 0 (extended context) has no memlab counterpart");
        }
        if !self.cutoffs.is_empty() || self.div_val != 1 {
            return unsupported(
                "the adaptive softmax (cutoffs, div_val) has no memlab counterpart",
            );
        }
        if self.d_embed.is_some_and(|d| d != self.d_model) {
            return unsupported(
                "d_embed ≠ d_model (an embedding projection) has no memlab counterpart",
            );
        }
        if self.sample_softmax > 0 {
            return unsupported(
                "sample_softmax > 0 replaces the output layer LM-RMT evaluates with",
            );
        }
        if self.tgt_len.is_some_and(|t| t != self.seg) {
            return unsupported("tgt_len differs from seg");
        }
        if self.same_length && self.mem_len == 0 {
            return unsupported(
                "same_length with mem_len 0 masks every key in LM-RMT (its mask_shift_len is 0)",
            );
        }
        let mut t = toml::Table::new();
        let mut set = |k: &str, v: toml::Value| {
            t.insert(k.into(), v);
        };
        let int = |n: usize| toml::Value::Integer(n as i64);
        let rmt = self.num_mem_tokens > 0;
        set("arch", (if rmt { "rmt" } else { "transformer-xl" }).into());
        if rmt {
            set("backbone", "transformer-xl".into());
            set("num_mem_tokens", int(self.num_mem_tokens));
            set("mem_at_end", self.mem_at_end.into());
            set("read_mem_from_cache", self.read_mem_from_cache.into());
            set("memory_init", "repeated".into());
        }
        set("d_model", int(self.d_model));
        set("n_layers", int(self.n_layer));
        set("n_heads", int(self.n_head));
        set("d_head", int(self.d_head));
        set("d_ff", int(self.d_inner));
        set("dropout", self.dropout.into());
        set("attn_dropout", self.dropatt.into());
        set("pre_norm", self.pre_lnorm.into());
        set("mem_len", int(self.mem_len));
        if self.clamp_len > 0 {
            set("clamp_len", int(self.clamp_len as usize));
        }
        set("same_length", self.same_length.into());
        set("untie_r", false.into());
        set("tied_embeddings", self.tie_weight.into());
        set("scale_embeddings", true.into());
        set("activation", "relu".into());
        Ok(t)
    }
}

/// The worst errors of one quantity of one segment.
#[derive(Debug, Clone, Serialize)]
pub struct ParityRow {
    pub segment: usize,
    /// `nll`, `mem_tokens` or `cache[l]`.
    pub quantity: String,
    pub values: usize,
    /// `max |memlab − official|`.
    pub abs: f64,
    /// `abs / max |official|`: the error relative to the quantity's scale.
    pub rel: f64,
}

/// What `memlab parity` found.
#[derive(Debug, Clone, Serialize)]
pub struct ParityReport {
    pub case: String,
    pub weights: PathBuf,
    pub arch: String,
    pub rows: Vec<ParityRow>,
    pub worst_rel: f64,
}

impl ParityReport {
    pub fn passed(&self) -> bool {
        self.worst_rel <= PARITY_TOLERANCE
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "parity of `{}` ({}, weights {}):\n\n| segment | quantity | values | max abs error | max rel error |\n| ---: | --- | ---: | ---: | ---: |\n",
            self.case,
            self.arch,
            self.weights.display()
        );
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {:.3e} | {:.3e} |\n",
                r.segment, r.quantity, r.values, r.abs, r.rel
            );
        }
        s += &format!(
            "\nworst relative error {:.3e} (tolerance {PARITY_TOLERANCE:e}): {}\n",
            self.worst_rel,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}

/// `max |a − b|` and that relative to `max |b|`.
pub fn errors(ours: &[f32], theirs: &[f64]) -> (f64, f64) {
    let abs = ours
        .iter()
        .zip(theirs)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    let scale = theirs.iter().map(|b| b.abs()).fold(0.0, f64::max);
    let rel = if scale > 0.0 {
        abs / scale
    } else if abs > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    (abs, rel)
}

/// The weight file of a case: `NAME.safetensors`, or `NAME.pt` when asked
/// for or when there is no `.safetensors`.
pub fn case_weights(fixture: &Path, format: Option<&str>) -> Result<PathBuf> {
    let with = |ext: &str| {
        let mut p = fixture.as_os_str().to_owned();
        p.push(format!(".{ext}"));
        PathBuf::from(p)
    };
    Ok(match format {
        Some(ext @ ("pt" | "safetensors")) => with(ext),
        Some(other) => bail!("--weights-format {other:?}: use pt or safetensors"),
        None if with("safetensors").is_file() => with("safetensors"),
        None => with("pt"),
    })
}

/// Reads `NAME.json`.
pub fn read_case(fixture: &Path) -> Result<Case> {
    let mut path = fixture.as_os_str().to_owned();
    path.push(".json");
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the parity case {}", path.display()))?;
    let case: Case = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a parity case", path.display()))?;
    let c = &case.config;
    if case.segments.len() != c.segments {
        bail!(
            "{}: config.segments is {} but {} segments follow",
            path.display(),
            c.segments,
            case.segments.len()
        );
    }
    Ok(case)
}

/// `memlab parity`: builds the memlab model a case describes, loads its
/// official weights, reads every segment with memory carried and compares
/// the per-token NLL, the memory tokens written and every layer's cache
/// with what the official code computed.
pub fn run_parity(
    fixture: &Path,
    format: Option<&str>,
    backend: BackendKind,
) -> Result<ParityReport> {
    let case = read_case(fixture)?;
    let weights = case_weights(fixture, format)?;
    let snapshots = read_weights(&weights)?;
    let table = case.config.model_table()?;
    let spec = ModelSpec::from_table(&table, "model")?;

    struct Parity<'a> {
        case: &'a Case,
        spec: &'a ModelSpec,
        snapshots: &'a Weights,
    }
    impl ModelJob for Parity<'_> {
        type Output = Result<Vec<ParityRow>>;
        fn run<A: Architecture, AB: AutodiffBackend>(self, device: AB::Device) -> Self::Output {
            type B<AB> = <AB as AutodiffBackend>::InnerBackend;
            let Parity {
                case,
                spec,
                snapshots,
            } = self;
            let c = &case.config;
            let ctx = ModelContext {
                vocab_size: c.vocab,
                max_segment_len: c.seg,
            };
            let model_config = parse_model_config::<A>(spec.fields.clone(), &ctx)?;
            let layout = layout::<A>(&model_config)?;
            let model = A::init::<B<AB>>(&model_config, &ctx, &device);
            let model = load_official::<B<AB>, _>(model, &layout, snapshots)?;
            compare_segments::<A, B<AB>>(&model, case, &layout, &device)
        }
    }
    let job = Parity {
        case: &case,
        spec: &spec,
        snapshots: &snapshots,
    };
    let rows = run_job(backend, &spec.arch, job)??;
    let worst_rel = rows.iter().map(|r| r.rel).fold(0.0, f64::max);
    Ok(ParityReport {
        case: case.config.name.clone(),
        weights,
        arch: spec.arch,
        rows,
        worst_rel,
    })
}

/// `[seg][batch]` ids as `[batch, seg]`, each checked against the vocabulary.
fn batch_major_ids<B: Backend>(
    rows: &[Vec<i64>],
    case: &CaseConfig,
    what: &str,
    device: &B::Device,
) -> Result<Tensor<B, 2, Int>> {
    if rows.len() != case.seg || rows.iter().any(|r| r.len() != case.batch) {
        bail!(
            "`{what}` is not [seg = {}][batch = {}]",
            case.seg,
            case.batch
        );
    }
    let mut ids = vec![0i64; case.seg * case.batch];
    for (t, row) in rows.iter().enumerate() {
        for (b, &id) in row.iter().enumerate() {
            if id < 0 || id as usize >= case.vocab {
                bail!(
                    "`{what}` holds token id {id}, outside the vocabulary of {}",
                    case.vocab
                );
            }
            ids[b * case.seg + t] = id;
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(ids, [case.batch, case.seg]),
        device,
    ))
}

/// `[batch, len, d]` values in the official `[len][batch][d]` order.
fn time_major(t: Tensor<impl Backend, 3>) -> Vec<f32> {
    t.swap_dims(0, 1)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 values")
}

fn flatten3(v: &[Vec<Vec<f64>>]) -> (Vec<usize>, Vec<f64>) {
    let shape = vec![
        v.len(),
        v.first().map_or(0, |x| x.len()),
        v.first().and_then(|x| x.first()).map_or(0, |x| x.len()),
    ];
    (shape, v.iter().flatten().flatten().copied().collect())
}

fn compare_segments<A: Architecture, B: Backend>(
    model: &A::Model<B>,
    case: &Case,
    layout: &LmRmtLayout,
    device: &B::Device,
) -> Result<Vec<ParityRow>> {
    let c = &case.config;
    let mut rows = Vec::new();
    let mut memory = model.init_memory(c.batch, device);
    // LM-RMT also caches the last layer's output (`hids[n_layer]`), which
    // no layer reads; memlab keeps it here to compare it.
    let mut last_output: Option<Tensor<B, 3>> = None;
    for (s, segment) in case.segments.iter().enumerate() {
        let tokens = batch_major_ids::<B>(&segment.input, c, "input", device)?;
        let targets = batch_major_ids::<B>(&segment.target, c, "target", device)?;
        let (out, full) = A::lm_rmt_forward(model, tokens, memory)
            .ok_or_else(|| anyhow!("{} has no LM-RMT forward pass", A::NAME))?;
        let mut push = |quantity: String,
                        ours: Vec<f32>,
                        shape: Vec<usize>,
                        theirs: (Vec<usize>, Vec<f64>)|
         -> Result<()> {
            if shape != theirs.0 {
                bail!(
                    "segment {s}: `{quantity}` has shape {shape:?} in memlab but {:?} in the case",
                    theirs.0
                );
            }
            let (abs, rel) = errors(&ours, &theirs.1);
            rows.push(ParityRow {
                segment: s,
                quantity,
                values: ours.len(),
                abs,
                rel,
            });
            Ok(())
        };

        let nll = log_softmax(out.logits, 2)
            .gather(2, targets.unsqueeze_dim::<3>(2))
            .neg()
            .squeeze_dim::<2>(2); // [batch, seg]
        let nll_t: Vec<f32> = nll
            .transpose()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 values");
        let theirs_nll: Vec<f64> = segment.nll.iter().flatten().copied().collect();
        let nll_shape = vec![segment.nll.len(), segment.nll.first().map_or(0, Vec::len)];
        push(
            "nll".into(),
            nll_t,
            vec![c.seg, c.batch],
            (nll_shape, theirs_nll),
        )?;

        let mut slots = out.memory.to_slots();
        // RMT's first slot is its memory tokens; the rest, the cache.
        let written = layout.memory_tokens.and_then(|_| slots.remove(0));
        let state: Vec<Tensor<B, 3>> = slots.into_iter().flatten().collect();
        match (written, &segment.mem_tokens) {
            (Some(ours), Some(theirs)) => {
                let [b, m, d] = ours.dims();
                push(
                    "mem_tokens".into(),
                    time_major(ours),
                    vec![m, b, d],
                    flatten3(theirs),
                )?;
            }
            (None, None) => {}
            (ours, _) => bail!(
                "segment {s}: memlab {} memory tokens, the case {}",
                if ours.is_some() {
                    "writes"
                } else {
                    "writes no"
                },
                if segment.mem_tokens.is_some() {
                    "holds some"
                } else {
                    "none"
                }
            ),
        }

        let keep = c.mem_len;
        last_output = (keep > 0).then(|| {
            let all = match last_output.take() {
                Some(prev) => Tensor::cat(vec![prev, full.clone()], 1),
                None => full.clone(),
            };
            let len = all.dims()[1];
            all.narrow(1, len - len.min(keep), len.min(keep))
        });
        match &segment.cache {
            Some(layers) => {
                if layers.len() != c.n_layer + 1 || state.len() != c.n_layer {
                    bail!(
                        "segment {s}: the case caches {} layers, memlab {} (+ the last output)",
                        layers.len(),
                        state.len()
                    );
                }
                let ours = state.iter().cloned().chain(last_output.clone());
                for (l, (ours, theirs)) in ours.zip(layers).enumerate() {
                    let [b, len, d] = ours.dims();
                    push(
                        format!("cache[{l}]"),
                        time_major(ours),
                        vec![len, b, d],
                        flatten3(theirs),
                    )?;
                }
            }
            None if state.is_empty() => {}
            None => bail!(
                "segment {s}: memlab caches {} layers, the case none",
                state.len()
            ),
        }
        memory = out.memory;
    }
    Ok(rows)
}
