//! `memlab`: train, evaluate and compare long-memory transformers.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use memlab_cli::bench::{BenchPlan, bench_markdown, run_bench, write_bench_outputs};
use memlab_cli::compare::{CellOutcome, plan_table, write_compare_outputs, write_curves};
use memlab_cli::crosscheck;
use memlab_cli::plot::{CurveRequest, training_curves};
use memlab_cli::{
    BackendKind, CompareOptions, data, metric_name, registry, run_compare, run_eval, run_train,
};
use memlab_core::{ExperimentConfig, Split};
use memlab_train::checkpoint::write_atomically;
use memlab_train::distributed::Nodes;
use memlab_train::run_dir::run_dir;

/// Counts heap bytes, for `memlab bench`'s peak-memory column on the CPU.
#[global_allocator]
static ALLOCATOR: memlab_cli::alloc::Counting = memlab_cli::alloc::Counting;

#[derive(Parser)]
#[command(
    name = "memlab",
    version,
    about = "Train, compare and benchmark long-memory transformers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the [model] of a config; writes config.toml, metrics.jsonl and
    /// checkpoint.mpk into run.out_dir/run.name.
    Train {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
        backend: BackendKind,
        /// Override a config value, e.g. `--set train.lr=0.001` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue the run from its directory's checkpoint.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Replace the run its directory already holds.
        #[arg(long)]
        overwrite: bool,
        /// Data-parallel peers in this process (`train.devices`): the GPUs
        /// 0..N of a GPU backend, or N threads sharing the CPU.
        #[arg(long, value_parser = parse_positive)]
        devices: Option<usize>,
        /// Processes (machines) taking part, each with `--devices` peers
        /// (`train.nodes`); needs --node-rank and --orchestrator.
        #[arg(long, value_parser = parse_positive, requires_all = ["node_rank", "orchestrator"])]
        nodes: Option<usize>,
        /// This process's rank among --nodes (0 writes the run).
        #[arg(long, requires = "nodes")]
        node_rank: Option<usize>,
        /// The address of `memlab orchestrator`, e.g. ws://10.0.0.1:3000.
        #[arg(long, requires = "nodes")]
        orchestrator: Option<String>,
        /// The port this node serves its tensors to the others on
        /// (default: the orchestrator's port + 1 + node rank).
        #[arg(long, requires = "nodes")]
        data_port: Option<u16>,
        /// The address the other nodes reach this one at, ws://HOST:PORT
        /// (default: ws://127.0.0.1:DATA_PORT, for nodes on one machine).
        #[arg(long, requires = "nodes")]
        node_address: Option<String>,
    },
    /// Serve the collective's orchestrator, through which the processes of
    /// a multi-node `memlab train --nodes K` find each other; runs until
    /// interrupted.
    Orchestrator {
        /// Port to listen on (all interfaces).
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Evaluate the checkpoint of a run directory.
    Eval {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
        backend: BackendKind,
        /// Split to evaluate on: valid, test or train.
        #[arg(long, default_value = "valid", value_parser = parse_split)]
        split: Split,
        /// Number of batches (default: the run's train.eval_batches).
        #[arg(long, value_parser = parse_positive)]
        batches: Option<usize>,
    },
    /// Stream text from a trained byte- or word-level run: reads the
    /// prompt, then generates, memory carried across segments as in training.
    Generate {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
        backend: BackendKind,
        /// The text to start from.
        #[arg(
            long,
            conflicts_with = "prompt_file",
            required_unless_present = "prompt_file"
        )]
        prompt: Option<String>,
        /// Read the prompt from this file.
        #[arg(long)]
        prompt_file: Option<PathBuf>,
        /// Number of tokens to generate.
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        /// Sampling temperature; 0 picks the most likely token (greedy).
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Sample among the k most likely tokens only (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Seed of the sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Re-read the partial segment for every token instead of keeping
        /// its keys and values (the same text, slower: for comparison).
        #[arg(long)]
        re_read: bool,
    },
    /// Train every model of [compare] under every setting with every seed
    /// (compare.seeds); print mean ± std tables and write compare.md,
    /// compare.csv (every cell), summary.csv and compare.svg. Run again, it
    /// keeps the cells that finished and resumes the one interrupted.
    Compare {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
        backend: BackendKind,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Train every cell afresh, replacing the runs their directories hold.
        #[arg(long)]
        fresh: bool,
        /// Also write the tables and the figure (compare.md, compare.csv,
        /// summary.csv, compare.svg) into this directory: a small copy to
        /// publish, e.g. under docs/, without the runs' checkpoints.
        #[arg(long, value_name = "DIR")]
        publish: Option<PathBuf>,
        /// List the cells and what their directories hold (finished,
        /// interrupted, to train), check every model against its task,
        /// and train nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Draw training curves from runs' metrics.jsonl, one line per run
    /// (a directory of runs, such as a comparison's, stands for them all).
    Plot {
        /// Run directories (repeatable).
        #[arg(long = "run", required = true)]
        runs: Vec<PathBuf>,
        /// The field to draw: loss, accuracy, grad_norm, lr, value...
        #[arg(long, default_value = "loss")]
        field: String,
        /// The lines to read: train or valid.
        #[arg(long, default_value = "train")]
        split: String,
        /// Average each point with the N - 1 logged before it.
        #[arg(long, default_value_t = 1, value_parser = parse_positive)]
        smooth: usize,
        /// A logarithmic y axis.
        #[arg(long)]
        log_y: bool,
        /// The SVG file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Regenerate the figures of a document from the comparison files it
    /// names (its `<!-- report: ... -->` parts, e.g. docs/reproductions.md),
    /// or, with --check, fail naming the first part that differs.
    Report {
        /// The Markdown document.
        #[arg(long)]
        doc: PathBuf,
        /// Check only: change nothing, fail where the document and the
        /// files disagree.
        #[arg(long)]
        check: bool,
    },
    /// Measure every model of a bench config on every chosen backend:
    /// forward and training tokens/s, peak memory, model FLOPs, and forward
    /// tokens/s against sequence length. Writes bench.md, bench.csv,
    /// scaling.csv and scaling.svg into bench.out_dir/bench.name.
    Bench {
        #[arg(long)]
        config: PathBuf,
        /// Backend to measure on (repeatable; default flex).
        #[arg(long = "backend", value_enum)]
        backends: Vec<BackendKind>,
        /// Every backend compiled into this binary.
        #[arg(long, conflicts_with = "backends")]
        all_backends: bool,
        /// The device's peak TFLOP/s (from its data sheet) for the
        /// achieved-fraction columns.
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// First check that every chosen backend other than flex (the CPU) computes
        /// what the CPU computes: each model's logits, loss and gradients
        /// over 3 segments of batch 2, same weights. Writes check.md; stops
        /// before timing if a model is outside its tolerance.
        #[arg(long)]
        check: bool,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Load official LM-RMT weights (booydar/LM-RMT's MemTransformerLM:
    /// Transformer-XL, RMT, Tr-XL + RMT) or a Hugging Face GPT-2 into the
    /// model a config describes and write a run directory that eval,
    /// generate and train --resume read.
    Import {
        /// Where the weights come from: lm-rmt (--weights) or hf (--model).
        #[arg(long, value_parser = ["lm-rmt", "hf"])]
        from: String,
        /// lm-rmt: the state_dict, a torch.save file (.pt) or a .safetensors.
        #[arg(long, required_if_eq("from", "lm-rmt"))]
        weights: Option<PathBuf>,
        /// hf: the model folder (config.json, model.safetensors).
        #[arg(long, required_if_eq("from", "hf"))]
        model: Option<PathBuf>,
        /// A memlab config whose [model] has the weights' sizes.
        #[arg(long)]
        config: PathBuf,
        /// The run directory to write (must not hold a checkpoint).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a run's Transformer-XL or RMT model under LM-RMT's names and
    /// layouts, as a .safetensors its MemTransformerLM loads, or a run's
    /// GPT-2 as a folder transformers' GPT2LMHeadModel.from_pretrained loads.
    Export {
        #[arg(long)]
        run: PathBuf,
        /// The format to write: lm-rmt or hf.
        #[arg(long, value_parser = ["lm-rmt", "hf"])]
        to: String,
        /// lm-rmt: the .safetensors file to write; hf: the folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check that memlab computes what the official LM-RMT code computed on
    /// a case (PATH/NAME.json with NAME.safetensors or NAME.pt): per
    /// segment, the worst errors of the per-token NLL, the memory tokens
    /// written and every layer's cache. Fails above 1e-4 relative.
    Parity {
        /// Whose outputs the case holds: lm-rmt (PATH/NAME, without
        /// extension) or hf (a folder from scripts/hf_gpt2_fixture.py:
        /// config.json, model.safetensors, case.json; compares logits and
        /// every hidden state).
        #[arg(long, value_parser = ["lm-rmt", "hf"], default_value = "lm-rmt")]
        from: String,
        #[arg(long)]
        fixture: PathBuf,
        /// Which weight file to read: safetensors (default when present) or pt.
        #[arg(long)]
        weights_format: Option<String>,
        #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
        backend: BackendKind,
        /// Also print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the registered architectures and task kinds.
    Models,
    /// Fetch and check the public corpora (enwik8, text8, WikiText).
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
}

#[derive(Subcommand)]
enum DataAction {
    /// The known corpora and whether they are in the data directory.
    List {
        /// Data directory (default: $MEMLAB_DATA_DIR, else ./data).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Download a corpus (needs network access, curl and unzip) and verify
    /// its checksums. $MEMLAB_DATA_MIRROR replaces the origin with a mirror
    /// holding the same archive names.
    Download {
        /// enwik8, text8, wikitext-103 or wikitext-2.
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check the files of a corpus already in the data directory.
    Verify {
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "valid" => Ok(Split::Valid),
        "test" => Ok(Split::Test),
        "train" => Ok(Split::Train),
        other => Err(format!("unknown split {other:?}; use valid, test or train")),
    }
}

/// Writes to stdout and flushes, so that streamed text appears as it comes;
/// a closed pipe (`| head`) ends the program quietly.
fn write_bytes(out: &mut impl std::io::Write, bytes: &[u8]) -> Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other.context("writing to standard output")?),
    }
}

fn write_out(text: &str) -> Result<()> {
    write_bytes(&mut std::io::stdout().lock(), text.as_bytes())
}

/// `println!` that ends quietly on a closed pipe and reports a failed write
/// (a full disk) as an error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(&format!("{}\n", format_args!($($arg)*)))?
    };
}

/// Says which defaults a config file leaves in force.
fn note_defaults(path: &std::path::Path) {
    for section in ExperimentConfig::defaulted_sections(path) {
        let defaults = match section {
            "run" => toml::to_string(&memlab_core::config::RunConfig::default()),
            _ => toml::to_string(&memlab_core::config::TrainConfig::default()),
        }
        .unwrap_or_default()
        .lines()
        .collect::<Vec<_>>()
        .join(", ");
        eprintln!(
            "note: {} has no [{section}] section; using its defaults: {defaults}",
            path.display()
        );
    }
}

/// A node's default data port: the orchestrator's port (`ws://HOST:PORT`)
/// plus 1 plus the node's rank.
fn default_data_port(orchestrator: &str, rank: usize) -> Result<u16> {
    let port: u16 = orchestrator
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| anyhow!("--orchestrator {orchestrator:?} has no port (ws://HOST:PORT)"))?;
    u16::try_from(port as usize + 1 + rank)
        .map_err(|_| anyhow!("no data port above the orchestrator's {port}; give --data-port"))
}

/// The collective's websocket servers log every connection and transfer at
/// INFO unless a subscriber is already set: set one that shows warnings and
/// errors only.
fn quiet_collective_logs() {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(LevelFilter::WARN);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// A training error in the words of this command line: the flags that
/// resume or replace a run.
fn with_flags(err: anyhow::Error) -> anyhow::Error {
    use memlab_train::TrainError;
    match err.downcast_ref::<TrainError>() {
        Some(TrainError::RunExists(dir)) => anyhow::anyhow!(
            "{} already holds a run; continue it with --resume, or replace it with --overwrite",
            dir.display()
        ),
        Some(TrainError::NoCheckpoint(dir)) => anyhow::anyhow!(
            "cannot resume: {} holds no checkpoint ({}); drop --resume to start the run",
            dir.display(),
            memlab_train::checkpoint::CHECKPOINT_FILE
        ),
        _ => err,
    }
}

fn main() {
    memlab_cli::alloc::keep_freed_memory();
    memlab_cli::threads::adopt_main_thread();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let progress = std::io::stderr().is_terminal();
    match cli.command {
        Command::Train {
            config,
            backend,
            overrides,
            resume,
            overwrite,
            devices,
            nodes,
            node_rank,
            orchestrator,
            data_port,
            node_address,
        } => {
            note_defaults(&config);
            let mut overrides = overrides;
            overrides.extend(devices.map(|n| format!("train.devices={n}")));
            overrides.extend(nodes.map(|n| format!("train.nodes={n}")));
            let config = ExperimentConfig::load(&config, &overrides)?;
            let nodes = match (nodes, node_rank, orchestrator) {
                (Some(count), Some(rank), Some(orchestrator)) => {
                    quiet_collective_logs();
                    let data_port = match data_port {
                        Some(port) => port,
                        None => default_data_port(&orchestrator, rank)?,
                    };
                    Some(Nodes {
                        rank,
                        count,
                        orchestrator,
                        address: node_address
                            .unwrap_or_else(|| format!("ws://127.0.0.1:{data_port}")),
                        data_port,
                    })
                }
                _ => None,
            };
            let Some(report) = run_train(&config, backend, resume, overwrite, progress, nodes)
                .map_err(with_flags)?
            else {
                out!(
                    "node {}: trained {} steps; node 0 writes the run and reports",
                    node_rank.unwrap_or(0),
                    config.train.steps
                );
                return Ok(());
            };
            if report.resumed_from > 0 {
                out!("resumed from step {}", report.resumed_from);
            }
            out!(
                "{}: {} parameters, {} memory floats/seq, {} steps on {backend}{}",
                report.model.name,
                report.model.parameters,
                report.model.memory_floats_per_sequence,
                report.steps,
                match report.flat {
                    Some(true) if report.steps < config.train.steps => format!(
                        " (stopped: flat for {} evaluations)",
                        config.train.flat_evals
                    ),
                    Some(true) => " (flat at the cap)".into(),
                    Some(false) => " (the cap; the curve is not flat)".into(),
                    None => String::new(),
                }
            );
            out!(
                "valid {} {:.4} (loss {:.4}, accuracy {:.4}); train {:.0} tokens/s",
                metric_name(report.eval.metric),
                report.eval.value,
                report.eval.loss,
                report.eval.accuracy,
                report.tokens_per_second
            );
            out!("run directory: {}", report.run_dir.display());
        }
        Command::Orchestrator { port } => {
            quiet_collective_logs();
            eprintln!("orchestrator listening on port {port} (all interfaces); Ctrl-C ends it");
            tokio::runtime::Runtime::new()
                .context("starting the orchestrator's runtime")?
                .block_on(burn_collective::start_global_orchestrator(port));
        }
        Command::Eval {
            run,
            backend,
            split,
            batches,
        } => {
            let report = run_eval(&run, backend, split, batches)?;
            let e = &report.eval;
            let generated = match (e.generated_accuracy, e.generated_exact_match) {
                (Some(acc), Some(exact)) => {
                    format!("; generated answer: accuracy {acc:.4}, exact match {exact:.4}")
                }
                _ => String::new(),
            };
            write_out(&format!(
                "{} at step {} on {:?}: {} {:.4}, loss {:.4}, teacher-forced accuracy {:.4}, exact match {:.4}{generated}\n{}\n",
                report.arch,
                report.step,
                report.split,
                metric_name(e.metric),
                e.value,
                e.loss,
                e.accuracy,
                e.exact_match,
                serde_json::to_string(&report)?
            ))?;
        }
        Command::Generate {
            run,
            backend,
            prompt,
            prompt_file,
            tokens,
            temperature,
            top_k,
            seed,
            re_read,
        } => {
            let prompt = match (prompt, prompt_file) {
                (Some(p), _) => p,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the prompt file {}", path.display()))?,
                (None, None) => unreachable!("clap requires one of them"),
            };
            if !(temperature.is_finite() && temperature >= 0.0) {
                anyhow::bail!("--temperature must be a number >= 0, got {temperature}");
            }
            let sampling = memlab_cli::Sampling {
                temperature,
                top_k,
                seed,
            };
            let mut stdout = std::io::stdout().lock();
            let report = memlab_cli::run_generate(
                &run,
                backend,
                &prompt,
                tokens,
                sampling,
                re_read,
                progress,
                &mut |bytes| write_bytes(&mut stdout, bytes),
            )?;
            write_bytes(&mut stdout, b"\n")?;
            eprintln!(
                "{} at step {}: {} tokens after a {}-token prompt, {:.1} tokens/s",
                report.arch,
                report.step,
                report.generated_tokens,
                report.prompt_tokens,
                report.tokens_per_second
            );
        }
        Command::Compare {
            config,
            backend,
            overrides,
            fresh,
            publish,
            dry_run,
        } => {
            note_defaults(&config);
            let config = ExperimentConfig::load(&config, &overrides)?;
            if dry_run {
                out!("{}", plan_table(&config)?);
                return Ok(());
            }
            let options = CompareOptions { fresh, progress };
            let rows = run_compare(&config, backend, options, |row, outcome| {
                let how = match outcome {
                    CellOutcome::Trained => "done",
                    CellOutcome::Resumed => "resumed and done",
                    CellOutcome::Kept => "kept (finished before)",
                };
                eprintln!(
                    "{how}: {} / {} / seed {}: {} {:.4}",
                    row.setting,
                    row.model,
                    row.seed,
                    metric_name(row.metric),
                    row.value
                );
            })?;
            let dir = run_dir(&config);
            let x_label = config.compare.as_ref().and_then(|c| c.x_label.as_deref());
            let title = config
                .compare
                .as_ref()
                .and_then(|c| c.title.clone())
                .unwrap_or_else(|| config.run.name.clone());
            let (tables, _) = write_compare_outputs(&dir, &rows, &title, x_label)?;
            if let Some(publish) = &publish {
                write_compare_outputs(publish, &rows, &title, x_label)?;
            }
            let dirs: Vec<&std::path::Path> = std::iter::once(dir.as_path())
                .chain(publish.as_deref())
                .collect();
            let curves = write_curves(&dirs, &config, &rows, &title)?;
            out!("{tables}");
            out!(
                "wrote {}, compare.csv, summary.csv, compare.svg and {curves} training-curve figures",
                dir.join("compare.md").display()
            );
            if let Some(publish) = publish {
                out!("and the same files into {}", publish.display());
            }
        }
        Command::Plot {
            runs,
            field,
            split,
            smooth,
            log_y,
            out,
        } => {
            let chart = training_curves(&CurveRequest {
                runs,
                field,
                split,
                smooth,
                log_y,
            })?;
            write_atomically(&out, chart.svg()?.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            out!("wrote {} ({} runs)", out.display(), chart.series.len());
        }
        Command::Report { doc, check } => {
            let text = std::fs::read_to_string(&doc)
                .with_context(|| format!("reading {}", doc.display()))?;
            let base = doc.parent().unwrap_or(std::path::Path::new("."));
            let parts = memlab_cli::report::count_parts(&text)?;
            if check {
                memlab_cli::report::check(&text, base)
                    .with_context(|| format!("{} is not in step with its files", doc.display()))?;
                out!(
                    "{}: {parts} generated parts, all in step with their files",
                    doc.display()
                );
            } else {
                let regenerated = memlab_cli::report::regenerate(&text, base)?;
                if regenerated != text {
                    write_atomically(&doc, regenerated.as_bytes())
                        .with_context(|| format!("writing {}", doc.display()))?;
                }
                out!(
                    "{}: {parts} generated parts{}",
                    doc.display(),
                    if regenerated == text {
                        ", unchanged"
                    } else {
                        " rewritten"
                    }
                );
            }
        }
        Command::Bench {
            config,
            backends,
            all_backends,
            peak_tflops,
            check,
            overrides,
        } => {
            if let Some(p) = peak_tflops.filter(|p| !(p.is_finite() && *p > 0.0)) {
                anyhow::bail!("--peak-tflops must be a positive number, got {p}");
            }
            let plan = BenchPlan::load(&config, &overrides)?;
            let backends = if all_backends {
                BackendKind::compiled()
            } else if backends.is_empty() {
                vec![BackendKind::Flex]
            } else {
                backends
            };
            let c = &plan.config;
            let dir = c.out_dir.join(&c.name);
            let title = format!(
                "{}: batch {} × segment {}",
                c.name, c.batch_size, c.segment_len
            );
            let others: Vec<BackendKind> = backends
                .iter()
                .copied()
                .filter(|&b| b != BackendKind::Flex)
                .collect();
            if check && others.is_empty() {
                eprintln!("--check: flex is the reference itself; nothing to check");
            } else if check {
                let names: Vec<String> = others.iter().map(|b| b.to_string()).collect();
                eprintln!("checking {} against the CPU", names.join(", "));
                let rows = crosscheck::check_plan(&plan, &others, Default::default())?;
                let table = crosscheck::check_markdown(&rows);
                out!("{table}");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                write_atomically(&dir.join("check.md"), table.as_bytes())?;
                crosscheck::require_agreement(&rows)?;
            }
            let report = run_bench(&plan, &backends, progress, |so_far| {
                if let Some(row) = so_far.rows.last() {
                    eprintln!(
                        "done: {} on {}: {:.0} tokens/s forward{}",
                        row.model,
                        row.backend,
                        row.forward_tokens_per_s(),
                        row.train_tokens_per_s()
                            .map_or(String::new(), |t| format!(", {t:.0} train"))
                    );
                }
                write_bench_outputs(&dir, so_far, &title, peak_tflops).map(drop)
            })?;
            out!("{}", bench_markdown(&report, peak_tflops));
            let files = write_bench_outputs(&dir, &report, &title, peak_tflops)?;
            let names: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
            out!("wrote {}", names.join(", "));
        }
        Command::Import {
            from,
            weights,
            model,
            config,
            out,
        } => {
            let (report, source) = match (from.as_str(), weights, model) {
                ("hf", _, Some(model)) => {
                    (memlab_cli::hf::run_import(&model, &config, &out)?, model)
                }
                (_, Some(weights), _) => (
                    memlab_cli::lm_rmt::run_import(&weights, &config, &out)?,
                    weights,
                ),
                _ => anyhow::bail!("--from {from} needs --weights (lm-rmt) or --model (hf)"),
            };
            out!(
                "imported {} tensors from {} into a {} model ({} parameters)",
                report.tensors,
                source.display(),
                report.arch,
                report.parameters
            );
            out!("run directory: {}", report.run_dir.display());
        }
        Command::Export { run, to, out } => {
            let arch = match to.as_str() {
                "hf" => memlab_cli::hf::run_export(&run, &out)?,
                _ => memlab_cli::lm_rmt::run_export(&run, &out)?,
            };
            out!(
                "wrote the {arch} model of {} to {}",
                run.display(),
                out.display()
            );
        }
        Command::Parity {
            from,
            fixture,
            weights_format,
            backend,
            json,
        } => {
            let report = match from.as_str() {
                "hf" => memlab_cli::hf::run_parity(&fixture)?,
                _ => memlab_cli::lm_rmt::run_parity(&fixture, weights_format.as_deref(), backend)?,
            };
            write_out(&report.markdown())?;
            if json {
                write_out(&format!("{}\n", serde_json::to_string(&report)?))?;
            }
            if !report.passed() {
                anyhow::bail!(
                    "parity of {} fails: worst relative error {:.3e} > {:e}",
                    fixture.display(),
                    report.worst_rel,
                    memlab_cli::lm_rmt::PARITY_TOLERANCE
                );
            }
        }
        Command::Models => {
            out!("architectures:");
            for (name, summary) in registry::SUMMARIES {
                out!("  {name:<16} {summary}");
            }
            out!("tasks:");
            for kind in memlab_tasks::KINDS {
                out!("  {kind}");
            }
        }
        Command::Data { action } => match action {
            DataAction::List { dir } => {
                let dir = data::data_dir(dir);
                out!("data directory: {}", dir.display());
                for corpus in data::CORPORA {
                    let present = corpus.files.iter().all(|f| dir.join(f.path).is_file());
                    let state = if present { "present" } else { "absent" };
                    out!("  {:<14} {state:<8} {}", corpus.name, corpus.url);
                }
            }
            DataAction::Download { name, dir } => {
                let corpus = data::corpus(&name)?;
                let mirror = std::env::var("MEMLAB_DATA_MIRROR").ok();
                for path in data::download(corpus, &data::data_dir(dir), mirror.as_deref())? {
                    out!("ok {}", path.display());
                }
            }
            DataAction::Verify { name, dir } => {
                let corpus = data::corpus(&name)?;
                for path in data::verify(corpus, &data::data_dir(dir))? {
                    out!("ok {}", path.display());
                }
            }
        },
    }
    Ok(())
}
