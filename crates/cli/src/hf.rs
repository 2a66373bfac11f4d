//! `memlab import --from hf`, `memlab export --to hf` and `memlab parity
//! --from hf`: Hugging Face GPT-2 folders (`config.json` +
//! `model.safetensors`, as `save_pretrained` writes them;
//! [`memlab_interop::hf_gpt2`] maps them) and the check that memlab's GPT-2
//! computes what `transformers`' `GPT2LMHeadModel` computed on a case
//! (`scripts/hf_gpt2_fixture.py` writes them).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::backend::Flex;
use burn::prelude::*;
use memlab_core::registry::parse_model_config;
use memlab_core::{Architecture, ExperimentConfig, ModelContext, ModelSpec, SegmentModel, Task};
use memlab_gpt2::{Gpt2Arch, Gpt2Config, Gpt2LtmArch, Gpt2RmtArch};
use memlab_interop::hf_gpt2::{
    HfGpt2Config, OfficialLongTerm, Weights, encode_hf, load_hf, read_weights,
};
use memlab_train::checkpoint::write_atomically;
use serde::Deserialize;

use crate::lm_rmt::{
    CpuAutodiff, ImportReport, ParityReport, ParityRow, errors, import_target, write_imported_run,
};
use crate::{BackendKind, LoadedRun, RunModelJob, build_task, with_run_model};

type Cpu = Flex;

/// The two files of a Hugging Face model folder.
fn model_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    if !dir.is_dir() {
        bail!("--model {} is not a folder", dir.display());
    }
    let (config, weights) = (dir.join("config.json"), dir.join("model.safetensors"));
    for file in [&config, &weights] {
        if !file.is_file() {
            bail!(
                "{} has no {} (a Hugging Face GPT-2 folder holds config.json and \
                 model.safetensors, as save_pretrained writes them)",
                dir.display(),
                file.file_name().unwrap().to_string_lossy()
            );
        }
    }
    Ok((config, weights))
}

/// `[model]` for the folder's model: config.json's sizes, where the memlab
/// config chooses the architecture (`gpt2`, or `gpt2-rmt` / `gpt2-ltm` and
/// its memory)
/// and may set the dropouts (a fine-tuning choice), but must agree on
/// everything else it names.
fn merged_model_table(
    hf: &HfGpt2Config,
    official: Option<&OfficialLongTerm>,
    given: Option<&toml::Table>,
) -> Result<toml::Table> {
    let mut table = hf.model_table();
    let Some(given) = given else {
        return Ok(table);
    };
    // An ∞-former GPT-2's own long-term memory, under what the config sets
    // of it (the KL's weight, a training choice, say).
    if let Some(official) = official
        && given.get("arch").and_then(|a| a.as_str()) == Some("gpt2-ltm")
    {
        let mut long_term = official.long_term_table();
        if let Some(toml::Value::Table(set)) = given.get("long_term") {
            long_term.extend(set.clone());
        }
        table.insert("long_term".into(), toml::Value::Table(long_term));
    }
    for (key, value) in given {
        match key.as_str() {
            "arch" if matches!(value.as_str(), Some("gpt2" | "gpt2-rmt" | "gpt2-ltm")) => {
                table.insert(key.clone(), value.clone());
            }
            "arch" => bail!(
                "model.arch is {value}; Hugging Face GPT-2 weights load into arch = \"gpt2\", \
                 \"gpt2-rmt\" or \"gpt2-ltm\""
            ),
            // Merged above, over an ∞-former file's own.
            "long_term" if table.contains_key("long_term") => {}
            // The dropouts (a fine-tuning choice) and the memory's own fields.
            "label" | "resid_pdrop" | "embd_pdrop" | "attn_pdrop" | "num_mem_tokens"
            | "reset_after" | "long_term" => {
                table.insert(key.clone(), value.clone());
            }
            _ => {
                let same = match (table.get(key), value) {
                    (Some(toml::Value::Float(a)), toml::Value::Float(b)) => a == b,
                    (Some(a), b) => a == b,
                    (None, _) => false,
                };
                if !same {
                    bail!(
                        "model.{key} is {value} in the config but {} in config.json",
                        table
                            .get(key)
                            .map_or("absent".to_string(), |v| v.to_string())
                    );
                }
            }
        }
    }
    Ok(table)
}

/// `memlab import --from hf`: loads a Hugging Face GPT-2 folder into
/// memlab's `gpt2` (or the GPT-2 inside `gpt2-rmt` or `gpt2-ltm`, whose
/// memory keeps its initial parameters, drawn under `run.seed`) over the
/// config's task and writes a run directory (`config.toml` with the
/// model's `[model]`, the task's files, a step-0 checkpoint) that `memlab
/// eval`, `generate` and `train --resume` read. Nothing is written unless
/// every check passes.
pub fn run_import(model_dir: &Path, config: &Path, out: &Path) -> Result<ImportReport> {
    let mut config = ExperimentConfig::load(config, &[])?;
    let dir = import_target(&mut config, out)?;
    config.model = Some(pretrained_model_table(model_dir, config.model.as_ref())?);
    let task = build_task(&config)?;
    import_into(model_dir, &config, task.as_ref(), &dir)
}

/// The `[model]` of a run that starts from the Hugging Face folder
/// `model_dir`: its `config.json`'s sizes under the given table's
/// architecture, dropouts and memory ([`merged_model_table`]).
pub(crate) fn pretrained_model_table(
    model_dir: &Path,
    given: Option<&toml::Table>,
) -> Result<toml::Table> {
    let (config_json, _) = model_files(model_dir)?;
    merged_model_table(
        &HfGpt2Config::read(&config_json)?,
        OfficialLongTerm::read(&config_json)?.as_ref(),
        given,
    )
}

/// Loads the folder's weights into `config`'s model (whose `[model]` is
/// [`pretrained_model_table`]'s) and writes the step-0 run in `dir`.
pub(crate) fn import_into(
    model_dir: &Path,
    config: &ExperimentConfig,
    task: &dyn Task,
    dir: &Path,
) -> Result<ImportReport> {
    let (config_json, weights) = model_files(model_dir)?;
    let hf = HfGpt2Config::read(&config_json)?;
    if task.vocab_size() != hf.vocab_size {
        bail!(
            "the task's vocabulary has {} tokens but the model's has {} (config.json \
             vocab_size): use the model's tokenizer",
            task.vocab_size(),
            hf.vocab_size
        );
    }
    let spec = ModelSpec::from_table(config.model_table()?, "model")?;
    let snapshots = read_weights(&weights)?;
    let import = Import {
        config,
        spec: &spec,
        ctx: ModelContext::of(config, task),
        n_layer: hf.n_layer,
        snapshots: &snapshots,
        dir,
        task,
    };
    let parameters = match spec.arch.as_str() {
        "gpt2-rmt" => import.load_into::<Gpt2RmtArch>("gpt2.")?,
        "gpt2-ltm" => import.load_into::<Gpt2LtmArch>("gpt2.")?,
        _ => import.load_into::<Gpt2Arch>("")?,
    };
    Ok(ImportReport {
        run_dir: dir.to_path_buf(),
        arch: spec.arch.clone(),
        tensors: snapshots.len(),
        parameters,
    })
}

/// What an import loads the folder's weights into.
struct Import<'a> {
    config: &'a ExperimentConfig,
    spec: &'a ModelSpec,
    ctx: ModelContext,
    n_layer: usize,
    snapshots: &'a Weights,
    dir: &'a Path,
    task: &'a dyn Task,
}

impl Import<'_> {
    /// Builds `A`, loads GPT-2 into its `Gpt2` at `module` and writes the
    /// run; returns the parameter count.
    fn load_into<A: Architecture>(&self, module: &str) -> Result<usize> {
        let model_config = parse_model_config::<A>(self.spec.fields.clone(), &self.ctx)?;
        // What the folder does not hold (a memory's new parameters) is
        // drawn under the run's seed, as a trained run's parameters are.
        let device = Default::default();
        let model =
            memlab_core::seed::init_seeded::<CpuAutodiff, _>(&device, self.config.run.seed, || {
                A::init_train::<CpuAutodiff>(&model_config, &self.ctx, &device)
            });
        let model = load_hf::<CpuAutodiff, _>(model, self.n_layer, module, self.snapshots)?;
        write_imported_run::<A>(self.dir, self.config, &model, self.task)?;
        Ok(model.num_params())
    }
}

/// `memlab export --to hf`: writes a run's `gpt2` model as a folder that
/// `GPT2LMHeadModel.from_pretrained` loads (`config.json`,
/// `model.safetensors`).
pub fn run_export(run: &Path, out: &Path) -> Result<String> {
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
            run: &LoadedRun,
            _: &B::Device,
        ) -> Result<String> {
            if A::NAME != Gpt2Arch::NAME {
                bail!(
                    "the run's model is `{}`; --to hf writes GPT-2 (arch = \"gpt2\")",
                    A::NAME
                );
            }
            let table = toml::Table::try_from(config).context("the run's [model]")?;
            let hf = HfGpt2Config::from_model_table(&table, run.task.vocab_size())?;
            let bytes = encode_hf::<B, _>(model, hf.n_layer)?;
            std::fs::create_dir_all(self.out)
                .with_context(|| format!("creating {}", self.out.display()))?;
            write_atomically(&self.out.join("model.safetensors"), &bytes)?;
            write_atomically(&self.out.join("config.json"), hf.to_json().as_bytes())?;
            Ok(A::NAME.to_string())
        }
    }
    let (_, arch) = with_run_model(&loaded, BackendKind::Flex, Export { out })?;
    Ok(arch)
}

/// A Hugging Face parity case (`scripts/hf_gpt2_fixture.py`, or
/// `scripts/official_gpt2_ltm_fixture.py` for the ∞-former's GPT-2): the
/// model folder's files beside `case.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfCase {
    pub name: String,
    /// The code that computed it, when not transformers' own GPT-2.
    #[serde(default)]
    pub official: Option<String>,
    /// The positions of each segment whose logits are kept (an ∞-former
    /// case's; a plain case keeps every position's).
    #[serde(default)]
    pub positions: Option<Vec<usize>>,
    pub segments: Vec<HfSegment>,
}

/// One segment as the model read it (positions from 0; with a memory,
/// after the segments before it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfSegment {
    /// `[batch][len]` token ids.
    pub input: Vec<Vec<i64>>,
    /// `[batch][len or positions][vocab]`.
    pub logits: Vec<Vec<Vec<f64>>>,
    /// `[n_layer + 1][batch][len][n_embd]` (`output_hidden_states`).
    #[serde(default)]
    pub hidden_states: Vec<Vec<Vec<Vec<f64>>>>,
    /// The ∞-former's KL regulariser (`kl_regs.mean()`); none before
    /// there is a memory.
    #[serde(default)]
    pub kl: Option<f64>,
}

/// Segment `s`'s tokens, checked against the model's sizes.
fn segment_tokens(s: usize, segment: &HfSegment, hf: &HfGpt2Config) -> Result<Tensor<Cpu, 2, Int>> {
    let batch = segment.input.len();
    let len = segment.input.first().map_or(0, Vec::len);
    if len == 0 || segment.input.iter().any(|r| r.len() != len) {
        bail!("segment {s}: `input` is not [batch][len]");
    }
    if len > hf.n_positions {
        bail!(
            "segment {s} holds {len} tokens, more than n_positions = {}",
            hf.n_positions
        );
    }
    let ids = flat2(&segment.input);
    if let Some(id) = ids.iter().find(|&&i| i < 0 || i as usize >= hf.vocab_size) {
        bail!(
            "segment {s}: token id {id} is outside the vocabulary of {}",
            hf.vocab_size
        );
    }
    Ok(Tensor::from_data(
        TensorData::new(ids, [batch, len]),
        &Default::default(),
    ))
}

fn flat2(rows: &[Vec<i64>]) -> Vec<i64> {
    rows.iter().flatten().copied().collect()
}

fn flat3(rows: &[Vec<Vec<f64>>]) -> Vec<f64> {
    rows.iter().flatten().flatten().copied().collect()
}

/// `memlab parity --from hf`: loads the case's folder into memlab's GPT-2,
/// reads every segment and compares the logits and every hidden state
/// with what `transformers` computed.
pub fn run_parity(fixture: &Path) -> Result<ParityReport> {
    let (config_json, weights) = model_files(fixture)?;
    let case_path = fixture.join("case.json");
    let text = std::fs::read_to_string(&case_path)
        .with_context(|| format!("reading the parity case {}", case_path.display()))?;
    let hf = HfGpt2Config::read(&config_json)?;
    let case: HfCase = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a parity case", case_path.display()))?;
    if let Some(official) = OfficialLongTerm::read(&config_json)? {
        return long_term_parity(&hf, &official, &case, &weights);
    }
    let ctx = ModelContext {
        vocab_size: hf.vocab_size,
        max_segment_len: hf.n_positions,
    };
    let spec = ModelSpec::from_table(&hf.model_table(), "model")?;
    let config: Gpt2Config = parse_model_config::<Gpt2Arch>(spec.fields, &ctx)?;
    let device = Default::default();
    let model = load_hf::<Cpu, _>(
        config.init::<Cpu>(&ctx, &device),
        config.n_layer,
        "",
        &read_weights(&weights)?,
    )?;
    let mut rows = Vec::new();
    for (s, segment) in case.segments.iter().enumerate() {
        let tokens = segment_tokens(s, segment, &hf)?;
        let states = model.hidden_states(tokens.clone());
        if states.len() != segment.hidden_states.len() {
            bail!(
                "segment {s}: the case has {} hidden states, the model {}",
                segment.hidden_states.len(),
                states.len()
            );
        }
        let logits = model
            .embedding
            .logits(states.last().expect("a state").clone());
        let mut compare = |quantity: String, ours: Tensor<Cpu, 3>, theirs: Vec<f64>| {
            let ours: Vec<f32> = ours.into_data().convert::<f32>().to_vec().expect("f32");
            if ours.len() != theirs.len() {
                return Err(anyhow!(
                    "segment {s}: `{quantity}` holds {} values, the model computes {}",
                    theirs.len(),
                    ours.len()
                ));
            }
            let (abs, rel) = errors(&ours, &theirs);
            rows.push(ParityRow {
                segment: s,
                quantity,
                values: ours.len(),
                abs,
                rel,
            });
            Ok(())
        };
        compare("logits".into(), logits, flat3(&segment.logits))?;
        for (l, (ours, theirs)) in states.into_iter().zip(&segment.hidden_states).enumerate() {
            compare(format!("hidden_states[{l}]"), ours, flat3(theirs))?;
        }
    }
    let worst_rel = rows.iter().map(|r| r.rel).fold(0.0, f64::max);
    Ok(ParityReport {
        case: case.name,
        weights,
        arch: Gpt2Arch::NAME.into(),
        rows,
        worst_rel,
    })
}

/// `memlab parity --from hf` on an ∞-former case: memlab's `gpt2-ltm`,
/// its settings from `config.json`, reads the blocks in order and its
/// logits and KL are compared with the official code's.
fn long_term_parity(
    hf: &HfGpt2Config,
    official: &OfficialLongTerm,
    case: &HfCase,
    weights: &Path,
) -> Result<ParityReport> {
    let ctx = ModelContext {
        vocab_size: hf.vocab_size,
        max_segment_len: hf.n_positions,
    };
    let mut given = toml::Table::new();
    given.insert("arch".into(), "gpt2-ltm".into());
    let table = merged_model_table(hf, Some(official), Some(&given))?;
    let spec = ModelSpec::from_table(&table, "model")?;
    let config = parse_model_config::<Gpt2LtmArch>(spec.fields, &ctx)?;
    let device = Default::default();
    let model = load_hf::<Cpu, _>(
        config.init::<Cpu>(&ctx, &device),
        config.gpt2.n_layer,
        "gpt2.",
        &read_weights(weights)?,
    )?;
    let mut memory = None;
    let mut rows = Vec::new();
    let positions = case.positions.as_ref().ok_or_else(|| {
        anyhow!("an ∞-former case lists the `positions` of each segment whose logits it keeps")
    })?;
    for (s, segment) in case.segments.iter().enumerate() {
        let tokens = segment_tokens(s, segment, hf)?;
        let [batch, len] = tokens.dims();
        if let Some(&p) = positions.iter().find(|&&p| p >= len) {
            bail!("position {p} is outside segment {s} of {len} tokens");
        }
        let state = memory
            .take()
            .unwrap_or_else(|| model.init_memory(batch, &device));
        let (h, next, kl) = model.hidden(tokens, state);
        memory = Some(next);
        let picked = Tensor::cat(
            positions
                .iter()
                .map(|&p| h.clone().narrow(1, p, 1))
                .collect(),
            1,
        );
        let logits: Vec<f32> = model
            .gpt2
            .embedding
            .logits(picked)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        let theirs = flat3(&segment.logits);
        if logits.len() != theirs.len() {
            bail!(
                "segment {s}: `logits` holds {} values, the model computes {}",
                theirs.len(),
                logits.len()
            );
        }
        let mut push = |quantity: &str, ours: &[f32], theirs: &[f64]| {
            let (abs, rel) = errors(ours, theirs);
            rows.push(ParityRow {
                segment: s,
                quantity: quantity.into(),
                values: ours.len(),
                abs,
                rel,
            });
        };
        push("logits", &logits, &theirs);
        match (kl, segment.kl) {
            (None, None) => {}
            (Some(ours), Some(theirs)) => {
                push("kl", &[ours.into_scalar().elem::<f32>()], &[theirs]);
            }
            (ours, theirs) => bail!(
                "segment {s}: the official code {} a KL term, memlab {}",
                if theirs.is_some() { "has" } else { "has no" },
                if ours.is_some() {
                    "has one"
                } else {
                    "has none"
                }
            ),
        }
    }
    let worst_rel = rows.iter().map(|r| r.rel).fold(0.0, f64::max);
    Ok(ParityReport {
        case: case.name.clone(),
        weights: weights.to_path_buf(),
        arch: Gpt2LtmArch::NAME.into(),
        rows,
        worst_rel,
    })
}
