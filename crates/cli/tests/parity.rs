//! Parity with the official LM-RMT code (booydar/LM-RMT's `MemTransformerLM`):
//! memlab loads its weights and computes its numbers.
//!
//! The truth is the official code's own output: the shared cases
//! (`$MEMLAB_DATA_DIR/../parity/lm-rmt`, or `$MEMLAB_PARITY_DIR`) and this
//! crate's `tests/parity/` cases, which `scripts/lm_rmt_fixture.py` wrote by
//! running the official `mem_transformer.py` in other settings (same_length,
//! pre-LN RMT, clamp_len with memory tokens, d_head × n_head ≠ d_model,
//! read_mem_from_cache, mem_at_end off, untied output weights, a cache
//! shorter than the augmented segment).

use std::path::{Path, PathBuf};
use std::process::Output;

use memlab_cli::BackendKind;
use memlab_cli::lm_rmt::{ParityReport, read_case, run_export, run_import, run_parity};
use memlab_interop::lm_rmt::read_weights;

mod common;
use common::{assert_fails_with, run as memlab, text};

fn repo_cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

/// The shared cases, when the shared directory is there.
fn shared_cases() -> Option<PathBuf> {
    let dir = match (
        std::env::var_os("MEMLAB_PARITY_DIR"),
        std::env::var_os("MEMLAB_DATA_DIR"),
    ) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(data)) => PathBuf::from(data).join("../parity/lm-rmt"),
        (None, None) => {
            eprintln!(
                "skipped: set MEMLAB_DATA_DIR (or MEMLAB_PARITY_DIR) to find the shared cases"
            );
            return None;
        }
    };
    assert!(
        dir.is_dir(),
        "{} is not a directory: the shared parity cases are missing",
        dir.display()
    );
    Some(dir)
}

/// `dir/NAME` for every `NAME.json` in `dir`.
fn cases_in(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.with_extension(""))
        .collect();
    cases.sort();
    cases
}

fn with_ext(case: &Path, ext: &str) -> PathBuf {
    let mut p = case.as_os_str().to_owned();
    p.push(format!(".{ext}"));
    PathBuf::from(p)
}

/// The case passes, and the report compares everything the case holds.
fn assert_passes(case: &Path, format: &str) -> ParityReport {
    let report = run_parity(case, Some(format), BackendKind::Flex)
        .unwrap_or_else(|e| panic!("{}: {e:#}", case.display()));
    assert!(report.passed(), "{}", report.markdown());
    let c = read_case(case).unwrap().config;
    for s in 0..c.segments {
        let has = |q: &str| {
            report
                .rows
                .iter()
                .any(|r| r.segment == s && r.quantity == q)
        };
        assert!(has("nll"), "{}: segment {s} nll", case.display());
        assert_eq!(
            has("mem_tokens"),
            c.num_mem_tokens > 0,
            "{}",
            case.display()
        );
        for l in 0..=c.n_layer {
            assert_eq!(
                has(&format!("cache[{l}]")),
                c.mem_len > 0,
                "{}",
                case.display()
            );
        }
    }
    report
}

#[test]
fn every_shared_case_passes_from_both_formats() {
    let Some(dir) = shared_cases() else { return };
    let cases = cases_in(&dir);
    assert!(
        cases.len() >= 4,
        "{} holds {} cases",
        dir.display(),
        cases.len()
    );
    for case in cases {
        for format in ["safetensors", "pt"] {
            assert!(
                with_ext(&case, format).is_file(),
                "{}.{format}",
                case.display()
            );
            assert_passes(&case, format);
        }
    }
}

#[test]
fn the_cases_in_other_settings_pass() {
    let cases = cases_in(&repo_cases());
    assert!(cases.len() >= 5);
    for case in &cases {
        assert_passes(case, "safetensors");
    }
    // An untied model from its `.pt`, where the output weight is its own key.
    assert_passes(&repo_cases().join("memtr-untied-prenorm"), "pt");
}

/// A copy of `case` under `dir` with one config field changed.
fn mutated(case: &Path, dir: &Path, field: &str, value: serde_json::Value) -> PathBuf {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(with_ext(case, "json")).unwrap()).unwrap();
    json["config"][field] = value;
    let out = dir.join("mutated");
    std::fs::write(with_ext(&out, "json"), json.to_string()).unwrap();
    std::fs::copy(with_ext(case, "safetensors"), with_ext(&out, "safetensors")).unwrap();
    out
}

#[test]
fn parity_fails_when_the_model_computes_something_else() {
    let dir = tempfile::tempdir().unwrap();
    // Each setting changes what LM-RMT computes; read with the other value,
    // the same weights must give numbers outside the tolerance.
    for (case, field, value) in [
        ("txl-rmt-same-length", "same_length", false.into()),
        (
            "rmt-prenorm-clamp-readcache",
            "read_mem_from_cache",
            false.into(),
        ),
        ("rmt-prenorm-clamp-readcache", "clamp_len", (-1).into()),
        ("rmt-prenorm-clamp-readcache", "pre_lnorm", false.into()),
        ("memtr-untied-prenorm", "mem_at_end", true.into()),
        ("xl-same-length-dhead", "same_length", false.into()),
    ] {
        let fixture = mutated(&repo_cases().join(case), dir.path(), field, value);
        let report = run_parity(&fixture, None, BackendKind::Flex).unwrap();
        assert!(!report.passed(), "{case} with {field} changed passes");
        let out = memlab(&["parity", "--fixture", fixture.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out.stdout));
        assert!(text(&out.stdout).contains("FAIL"));
        assert!(
            text(&out.stderr).contains("parity of"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn the_parity_command_prints_every_segment_and_exits_zero() {
    let case = repo_cases().join("rmt-clamp-short-cache");
    let out = memlab(&["parity", "--fixture", case.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "| 3 | nll |",
        "| 0 | mem_tokens |",
        "| 3 | cache[2] |",
        "PASS",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(json["worst_rel"].as_f64().unwrap() < 1e-4);
}

#[test]
fn a_bad_case_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let case = repo_cases().join("rmt-clamp-short-cache");
    for (field, value, needle) in [
        ("ext_len", serde_json::json!(2), "ext_len"),
        ("attn_type", serde_json::json!(1), "attn_type"),
        ("cutoffs", serde_json::json!([5]), "adaptive softmax"),
        ("wings", serde_json::json!(2), "wings"),
        ("d_inner", serde_json::json!(40), "pos_ff.CoreNet.0.weight"),
    ] {
        let fixture = mutated(&case, dir.path(), field, value);
        let err = format!(
            "{:#}",
            run_parity(&fixture, None, BackendKind::Flex).unwrap_err()
        );
        assert!(err.contains(needle), "{field}: {err}");
    }
    // A token id outside the vocabulary.
    let fixture = mutated(&case, dir.path(), "name", "bad-ids".into());
    let json_path = with_ext(&fixture, "json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    json["segments"][1]["input"][2][0] = 99.into();
    std::fs::write(&json_path, json.to_string()).unwrap();
    let err = format!(
        "{:#}",
        run_parity(&fixture, None, BackendKind::Flex).unwrap_err()
    );
    assert!(err.contains("token id 99"), "{err}");
    let out = memlab(&["parity", "--fixture", "/no/such/case"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/no/such/case.json"));
}

// ------------------------------------------------------------------ import

/// A memlab config for the `rmt-clamp-short-cache` case's sizes (vocab 13).
fn rmt_config(dir: &Path, name: &str, model_extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[run]
name = "unused"
out_dir = "{}"
seed = 1
[task]
kind = "copy"
length = 4
vocab_size = 13
[train]
steps = 2
batch_size = 4
segment_len = 5
lr = 0.001
min_lr = 0.0001
warmup_steps = 1
log_every = 1
eval_batches = 1
[model]
arch = "rmt"
backbone = "transformer-xl"
num_mem_tokens = 3
mem_len = 3
clamp_len = 2
d_model = 16
n_layers = 2
n_heads = 2
d_head = 8
d_ff = 32
pre_norm = false
scale_embeddings = true
{model_extra}
"#,
            dir.display()
        ),
    )
    .unwrap();
    path
}

/// The case's weights rewritten by `edit` (key → (shape, f32 values)).
fn edited_weights(
    case: &Path,
    out: &Path,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(with_ext(case, "safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: std::collections::BTreeMap<_, _> = file
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, (shape, data))| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (k.clone(), view)
        })
        .collect();
    let path = out.with_extension("safetensors");
    std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    path
}

/// `memlab import --from lm-rmt` through the binary.
fn import_cli(weights: &str, config: &str, out: &str) -> Output {
    memlab(&[
        "import",
        "--from",
        "lm-rmt",
        "--weights",
        weights,
        "--config",
        config,
        "--out",
        out,
    ])
}

fn import_error(weights: &Path, config: &Path, out: &Path) -> String {
    format!("{:#}", run_import(weights, config, out).unwrap_err())
}

#[test]
fn import_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let case = repo_cases().join("rmt-clamp-short-cache");
    let config = rmt_config(dir.path(), "rmt", "");
    let out = dir.path().join("run");
    let weights = |name: &str, edit: &dyn Fn(&mut std::collections::BTreeMap<_, _>)| {
        edited_weights(&case, &dir.path().join(name), |t| edit(t))
    };

    let missing = weights("missing", &|t| {
        t.remove("layers.1.pos_ff.CoreNet.3.bias");
    });
    let err = import_error(&missing, &config, &out);
    assert!(
        err.contains("lack") && err.contains("layers.1.pos_ff.CoreNet.3.bias"),
        "{err}"
    );

    let unknown = weights("unknown", &|t| {
        let r = t["layers.0.dec_attn.r_net.weight"].clone();
        t.insert("layers.2.dec_attn.r_net.weight".into(), r);
    });
    let err = import_error(&unknown, &config, &out);
    assert!(
        err.contains("no place") && err.contains("layers.2.dec_attn.r_net.weight"),
        "{err}"
    );

    let reshaped = weights("reshaped", &|t| {
        let (_, data) = t["r_w_bias"].clone();
        t.insert("r_w_bias".into(), (vec![16], data));
    });
    let err = import_error(&reshaped, &config, &out);
    assert!(
        err.contains("`r_w_bias` has shape [16]") && err.contains("[2, 8]"),
        "{err}"
    );

    // A checkpoint of another size than the config.
    let good = with_ext(&case, "safetensors");
    let wider = rmt_config(dir.path(), "wider", "");
    std::fs::write(
        &wider,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("d_ff = 32", "d_ff = 48"),
    )
    .unwrap();
    let err = import_error(&good, &wider, &out);
    assert!(
        err.contains("`layers.0.pos_ff.CoreNet.0.weight` has shape [32, 16]"),
        "{err}"
    );
    let deeper = dir.path().join("deeper.toml");
    std::fs::write(
        &deeper,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("n_layers = 2", "n_layers = 3"),
    )
    .unwrap();
    let err = import_error(&good, &deeper, &out);
    assert!(
        err.contains("lack") && err.contains("layers.2.dec_attn.qkv_net.weight"),
        "{err}"
    );
    let xl = dir.path().join("xl.toml");
    std::fs::write(
        &xl,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("arch = \"rmt\"", "arch = \"transformer-xl\"")
            .replace("backbone = \"transformer-xl\"\nnum_mem_tokens = 3\n", ""),
    )
    .unwrap();
    let err = import_error(&good, &xl, &out);
    assert!(
        err.contains("no place") && err.contains("mem_tokens"),
        "{err}"
    );

    // An untied checkpoint into a tied model.
    let untied = repo_cases().join("memtr-untied-prenorm");
    let memtr = rmt_config(dir.path(), "memtr", "mem_at_end = false");
    std::fs::write(
        &memtr,
        std::fs::read_to_string(&memtr)
            .unwrap()
            .replace(
                "num_mem_tokens = 3\nmem_len = 3\nclamp_len = 2",
                "num_mem_tokens = 2",
            )
            .replace("pre_norm = false", "pre_norm = true"),
    )
    .unwrap();
    let err = import_error(&with_ext(&untied, "pt"), &memtr, &out);
    assert!(
        err.contains("crit.out_layers.0.weight") && err.contains("tied_embeddings"),
        "{err}"
    );
    let untied_config = dir.path().join("memtr-untied.toml");
    std::fs::write(
        &untied_config,
        std::fs::read_to_string(&memtr).unwrap() + "tied_embeddings = false\n",
    )
    .unwrap();
    run_import(
        &with_ext(&untied, "pt"),
        &untied_config,
        &dir.path().join("untied"),
    )
    .unwrap();

    // An architecture without an LM-RMT counterpart, a bad file.
    let baseline = dir.path().join("baseline.toml");
    std::fs::write(
        &baseline,
        "[task]\nkind = \"copy\"\nlength = 4\nvocab_size = 13\n[model]\narch = \"baseline\"\n",
    )
    .unwrap();
    let err = import_error(&good, &baseline, &out);
    assert!(err.contains("no LM-RMT counterpart"), "{err}");
    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_error(&truncated, &config, &out);
    assert!(err.contains("truncated"), "{err}");
    let truncated_pt = dir.path().join("truncated.pt");
    let bytes = std::fs::read(with_ext(&untied, "pt")).unwrap();
    std::fs::write(&truncated_pt, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_error(&truncated_pt, &config, &out);
    assert!(err.contains("truncated"), "{err}");
    let err = import_error(Path::new("/no/such/weights.pt"), &config, &out);
    assert!(
        err.contains("/no/such/weights.pt") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!out.exists(), "a failed import wrote {}", out.display());

    // Through the binary: exit 1, the key, no panic.
    let out = import_cli(
        missing.to_str().unwrap(),
        config.to_str().unwrap(),
        dir.path().join("cli").to_str().unwrap(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("layers.1.pos_ff.CoreNet.3.bias") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// Every tensor of two weight files, by key: (shape, f32 bits).
fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    read_weights(path)
        .unwrap()
        .into_iter()
        .map(|(k, s)| {
            let data = s.to_data().unwrap();
            let shape = data.shape.to_vec();
            let bits = data
                .to_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect();
            (k, shape, bits)
        })
        .collect()
}

/// Every weight bit for bit; the `pos_emb.inv_freq` buffer (not a weight:
/// memlab computes it from `d_model`) within float rounding.
fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    let keys =
        |t: &[(String, Vec<usize>, Vec<u32>)]| t.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.1, y.1, "{}: shape", x.0);
        if x.0 == "pos_emb.inv_freq" {
            for (p, q) in x.2.iter().zip(&y.2) {
                let (p, q) = (f32::from_bits(*p), f32::from_bits(*q));
                assert!((p - q).abs() <= 1e-6 * q.abs(), "inv_freq {p} vs {q}");
            }
        } else {
            assert!(x.2 == y.2, "{} differs", x.0);
        }
    }
}

#[test]
fn imported_weights_compute_the_official_numbers_and_export_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let case = repo_cases().join("rmt-clamp-short-cache");
    let config = rmt_config(dir.path(), "rmt", "");
    let run = dir.path().join("imported");
    let out = import_cli(
        with_ext(&case, "safetensors").to_str().unwrap(),
        config.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("run directory"));
    for file in ["config.toml", "checkpoint.mpk"] {
        assert!(run.join(file).is_file(), "{file}");
    }
    // A second import into the same directory would overwrite it.
    let again = import_cli(
        with_ext(&case, "safetensors").to_str().unwrap(),
        config.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already holds a checkpoint"));

    // Export: the official tensors, bit for bit.
    let exported = dir.path().join("exported.safetensors");
    let out = memlab(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--to",
        "lm-rmt",
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_same_weights(&exported, &with_ext(&case, "safetensors"));

    // The imported run computes the official numbers: its export, beside
    // the case's outputs, passes parity.
    std::fs::copy(with_ext(&case, "json"), dir.path().join("exported.json")).unwrap();
    assert_passes(&dir.path().join("exported"), "safetensors");

    // eval reads the imported run.
    let out = memlab(&["eval", "--run", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rmt at step 0"),
        "{}",
        text(&out.stdout)
    );

    // Fine-tuning: train --resume starts from the imported weights.
    let resumed = memlab(&[
        "train",
        "--config",
        run.join("config.toml").to_str().unwrap(),
        "--resume",
    ]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let fresh_dir = dir.path().join("fresh");
    let fresh = memlab(&[
        "train",
        "--config",
        run.join("config.toml").to_str().unwrap(),
        "--set",
        &format!("run.out_dir=\"{}\"", fresh_dir.display()),
    ]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    let first_loss = |dir: &Path| -> f64 {
        let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        first["loss"].as_f64().unwrap()
    };
    let imported_loss = first_loss(&run);
    assert_ne!(imported_loss, first_loss(&fresh_dir.join("imported")));
    let figures: serde_json::Value = serde_json::from_str(
        text(&memlab(&["eval", "--run", run.to_str().unwrap()]).stdout)
            .lines()
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(figures["step"], 2);
}

#[test]
fn export_then_import_is_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    // A byte-level Transformer-XL trained here (pre-LN, d_head × n_heads ≠
    // d_model, untied output weights).
    let corpus = dir.path().join("corpus.txt");
    let text_: String = (0..400)
        .map(|i| {
            format!(
                "line {i}: the quick brown fox jumps over {} lazy dogs.\n",
                i % 7
            )
        })
        .collect();
    std::fs::write(&corpus, text_).unwrap();
    let config = dir.path().join("xl.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[run]
name = "trained"
out_dir = "{}"
seed = 3
[task]
kind = "bytes"
path = "{}"
seq_len = 20
[train]
steps = 3
batch_size = 4
segment_len = 5
warmup_steps = 1
log_every = 1
eval_batches = 1
[model]
arch = "transformer-xl"
d_model = 16
n_layers = 2
n_heads = 3
d_head = 4
d_ff = 24
mem_len = 4
pre_norm = true
tied_embeddings = false
"#,
            dir.path().display(),
            corpus.display()
        ),
    )
    .unwrap();
    let out = memlab(&["train", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trained = dir.path().join("trained");
    let first = dir.path().join("first.safetensors");
    run_export(&trained, &first).unwrap();
    let reimported = dir.path().join("reimported");
    run_import(&first, &trained.join("config.toml"), &reimported).unwrap();
    let second = dir.path().join("second.safetensors");
    run_export(&reimported, &second).unwrap();
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
    // The re-imported model computes exactly what the trained one does.
    let eval = |run: &Path| {
        let out = memlab(&["eval", "--run", run.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json: serde_json::Value =
            serde_json::from_str(text(&out.stdout).lines().nth(1).unwrap()).unwrap();
        json["eval"].clone()
    };
    assert_eq!(eval(&trained), eval(&reimported));
    let generate = |run: &Path| {
        let out = memlab(&[
            "generate",
            "--run",
            run.to_str().unwrap(),
            "--prompt",
            "line 3",
            "--tokens",
            "24",
            "--temperature",
            "0",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        out.stdout
    };
    assert_eq!(generate(&trained), generate(&reimported));

    let err = format!(
        "{:#}",
        run_export(&trained, &dir.path().join("x.pt")).unwrap_err()
    );
    assert!(err.contains(".safetensors"), "{err}");
}

// ------------------------------------------------------- Hugging Face GPT-2

/// The cases `scripts/hf_gpt2_fixture.py` wrote with transformers'
/// `GPT2LMHeadModel` (folders of config.json, model.safetensors, case.json).
fn hf_cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    cases.sort();
    cases
}

fn hf_parity(fixture: &Path) -> Output {
    memlab(&[
        "parity",
        "--from",
        "hf",
        "--fixture",
        fixture.to_str().unwrap(),
    ])
}

#[test]
fn every_hugging_face_case_passes_through_the_binary() {
    let cases = hf_cases();
    assert!(cases.len() >= 3, "{cases:?}");
    for case in &cases {
        let out = hf_parity(case);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("PASS"),
            "{}: {stdout}{}",
            case.display(),
            text(&out.stderr)
        );
        // The logits and every hidden state of every segment were compared.
        let report = memlab_cli::hf::run_parity(case).unwrap();
        let layers = report
            .rows
            .iter()
            .filter(|r| r.quantity.starts_with("hidden_states"))
            .count();
        assert!(layers >= 3 && report.worst_rel < 1e-5, "{report:?}");
    }
    // n_positions shorter than the text: the case reads several segments.
    let short = cases
        .iter()
        .find(|c| c.ends_with("gpt2-short-positions"))
        .unwrap();
    let short = memlab_cli::hf::run_parity(short).unwrap();
    assert!(short.rows.iter().any(|r| r.segment == 2), "{short:?}");
}

/// A copy of an HF case, with its weights edited and its config.json
/// rewritten by `config`.
fn hf_edited(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)>),
    config: impl FnOnce(String) -> String,
) -> PathBuf {
    let case = &hf_cases()[0];
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for file in ["case.json", "config.json"] {
        std::fs::copy(case.join(file), out.join(file)).unwrap();
    }
    let json = std::fs::read_to_string(out.join("config.json")).unwrap();
    std::fs::write(out.join("config.json"), config(json)).unwrap();
    edited_weights(&case.join("model"), &out.join("model"), edit);
    out
}

#[test]
fn parity_with_hugging_face_fails_when_the_model_computes_something_else() {
    let dir = tempfile::tempdir().unwrap();
    // Exact GELU where transformers computed GPT-2's tanh approximation
    // (`gelu_new`): the case must tell the two apart.
    let gelu = hf_edited(
        dir.path(),
        "gelu",
        |_| {},
        |c| c.replace("\"gelu_new\"", "\"gelu\""),
    );
    let out = hf_parity(&gelu);
    assert_fails_with(&out, "worst relative error");
    assert!(text(&out.stdout).contains("FAIL"), "{}", text(&out.stdout));
}

/// `dir/copy.toml`: the copy task over an HF case's vocabulary (41), in
/// segments of 9, with the `[model]` lines `model`.
fn hf_copy_config(dir: &Path, model: &str) -> PathBuf {
    let path = dir.join("copy.toml");
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"x\"\n[task]\nkind = \"copy\"\nlength = 3\nvocab_size = 41\n\
             [train]\nsteps = 2\nwarmup_steps = 1\nbatch_size = 2\nsegment_len = 9\n\
             [model]\n{model}\n"
        ),
    )
    .unwrap();
    path
}

/// `memlab import --from hf` through the binary.
fn hf_import(model: &Path, config: &Path, out: &Path) -> Output {
    memlab(&[
        "import",
        "--from",
        "hf",
        "--model",
        model.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn hugging_face_import_errors_name_the_key_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = hf_copy_config(dir.path(), "arch = \"gpt2\"");
    let import = |model: &Path| {
        let out = dir.path().join("run");
        let result = hf_import(model, &config, &out);
        assert!(!out.exists(), "a failed import wrote {}", out.display());
        result
    };
    let renamed = hf_edited(
        dir.path(),
        "renamed",
        |t| {
            let v = t.remove("transformer.h.1.mlp.c_fc.bias").unwrap();
            t.insert("transformer.h.1.mlp.c_fc.b".into(), v);
        },
        |c| c,
    );
    let out = import(&renamed);
    assert_fails_with(&out, "transformer.h.1.mlp.c_fc.b");
    let missing = hf_edited(
        dir.path(),
        "missing",
        |t| {
            t.remove("transformer.ln_f.weight");
        },
        |c| c,
    );
    assert_fails_with(
        &import(&missing),
        "lack 1 key the model needs: transformer.ln_f.weight",
    );
    let shape = hf_edited(
        dir.path(),
        "shape",
        |t| {
            let (shape, data) = t.get_mut("transformer.h.0.attn.c_attn.weight").unwrap();
            // [32, 96] read as [96, 32]: the nn.Linear layout, not Conv1D's.
            shape.reverse();
            let _ = data;
        },
        |c| c,
    );
    assert_fails_with(
        &import(&shape),
        "`transformer.h.0.attn.c_attn.weight` has shape [96, 32] in the weights but [32, 96]",
    );
    let truncated = hf_edited(dir.path(), "truncated", |_| {}, |c| c);
    let bytes = std::fs::read(truncated.join("model.safetensors")).unwrap();
    std::fs::write(
        truncated.join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    assert_fails_with(
        &import(&truncated),
        "is truncated or not a safetensors file",
    );
    let no_config = hf_edited(dir.path(), "no-config", |_| {}, |c| c);
    std::fs::remove_file(no_config.join("config.json")).unwrap();
    assert_fails_with(&import(&no_config), "has no config.json");
    let untied = hf_edited(
        dir.path(),
        "untied",
        |_| {},
        |c| {
            c.replace(
                "\"tie_word_embeddings\": true",
                "\"tie_word_embeddings\": false",
            )
        },
    );
    assert_fails_with(&import(&untied), "`tie_word_embeddings` is false");
    let vocab = hf_edited(dir.path(), "vocab", |_| {}, |c| c);
    let other = std::fs::read_to_string(&config)
        .unwrap()
        .replace("vocab_size = 41", "vocab_size = 12");
    std::fs::write(&config, other).unwrap();
    assert_fails_with(
        &import(&vocab),
        "the task's vocabulary has 12 tokens but the model's has 41",
    );
}

#[test]
fn hugging_face_import_then_export_gives_the_same_files_back() {
    let dir = tempfile::tempdir().unwrap();
    let case = &hf_cases()[0];
    let config = hf_copy_config(dir.path(), "arch = \"gpt2\"\nresid_pdrop = 0.1");
    let run_dir = dir.path().join("run");
    let out = hf_import(case, &config, &run_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The run's [model] is config.json's, with the config's dropout.
    let written = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(
        written.contains("n_embd = 32") && written.contains("resid_pdrop = 0.1"),
        "{written}"
    );
    let exported = dir.path().join("hf");
    let out = memlab(&[
        "export",
        "--run",
        run_dir.to_str().unwrap(),
        "--to",
        "hf",
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The same tensors, bit for bit, under the same keys.
    let read = |p: &Path| {
        let weights = read_weights(&p.join("model.safetensors")).unwrap();
        weights
            .iter()
            .map(|(k, s)| (k.clone(), s.to_data().unwrap().to_vec::<f32>().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(read(case), read(&exported));
    // And the exported folder computes the case's numbers.
    std::fs::copy(case.join("case.json"), exported.join("case.json")).unwrap();
    let out = hf_parity(&exported);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A `GPT2Model` file, as the hub's `gpt2` is: its keys without the
/// `transformer.` prefix, and the causal-mask buffers older versions of
/// transformers saved (`attn.bias`, `attn.masked_bias`).
#[test]
fn a_gpt2_model_file_without_the_prefix_and_with_mask_buffers_loads() {
    let dir = tempfile::tempdir().unwrap();
    let bare = hf_edited(
        dir.path(),
        "bare",
        |t| {
            let old = std::mem::take(t);
            for (key, value) in old {
                t.insert(key.trim_start_matches("transformer.").to_string(), value);
            }
            for i in 0..2 {
                let mask: Vec<u8> = (0..16 * 16)
                    .flat_map(|n| f32::from(u8::from(n % 16 <= n / 16)).to_le_bytes())
                    .collect();
                t.insert(format!("h.{i}.attn.bias"), (vec![1, 1, 16, 16], mask));
                t.insert(
                    format!("h.{i}.attn.masked_bias"),
                    (vec![], (-1e4f32).to_le_bytes().to_vec()),
                );
            }
        },
        |c| c,
    );
    let out = hf_parity(&bare);
    assert!(
        out.status.success() && text(&out.stdout).contains("PASS"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// GPT-2 + RMT (and GPT-2 + LTM, below) on a pre-trained GPT-2: the
/// folder's weights land in its GPT-2, the memory is new, and the run
/// trains on.
#[test]
fn a_hugging_face_gpt2_imports_under_rmt_memory_tokens() {
    // Segments of 9 and 2 × 2 memory tokens fit n_positions = 16; 13 do not.
    hf_imports_under_a_memory::<memlab_gpt2::Gpt2RmtArch>(
        "arch = \"gpt2-rmt\"\nnum_mem_tokens = 2",
        |m| &m.gpt2,
        13,
    );
}

#[test]
fn a_hugging_face_gpt2_imports_under_the_long_term_memory() {
    hf_imports_under_a_memory::<memlab_gpt2::Gpt2LtmArch>(
        "arch = \"gpt2-ltm\"\nreset_after = 0\n[model.long_term]\nnum_basis = 16\nnum_samples = 16",
        |m| &m.gpt2,
        17,
    );
}

/// Imports the first Hugging Face case under the memory architecture `A`
/// (the `[model]` lines `model`) and checks that the GPT-2 inside
/// (`gpt2`) computes transformers' logits, that a segment of `too_long`
/// tokens is refused before anything is written, and that the run trains
/// on.
fn hf_imports_under_a_memory<A: memlab_core::Architecture>(
    model_lines: &str,
    gpt2: impl Fn(&A::Model<burn::backend::Flex>) -> &memlab_gpt2::Gpt2<burn::backend::Flex>,
    too_long: usize,
) {
    use burn::backend::Flex;
    use memlab_core::ModelContext;
    use memlab_train::checkpoint::Checkpoint;

    let dir = tempfile::tempdir().unwrap();
    let case = &hf_cases()[0];
    let config = hf_copy_config(dir.path(), model_lines);
    let run_dir = dir.path().join("run");
    let import = || hf_import(case, &config, &run_dir);
    let out = import();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(A::NAME), "{}", text(&out.stdout));
    let written = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    let table: toml::Table = toml::from_str(&written).unwrap();
    let mut fields = table["model"].as_table().unwrap().clone();
    fields.remove("arch");
    let ctx = ModelContext {
        vocab_size: 41,
        max_segment_len: 9,
    };
    let model_config = memlab_core::registry::parse_model_config::<A>(fields, &ctx).unwrap();
    let device = Default::default();
    let model = Checkpoint::load(&run_dir.join("checkpoint.mpk"), A::NAME)
        .unwrap()
        .load_model(A::init::<Flex>(&model_config, &ctx, &device), &device)
        .unwrap();
    let model = gpt2(&model);
    assert_eq!(model.positions.max_len, 16, "config.json's sizes");
    let weights = read_weights(&case.join("model.safetensors")).unwrap();
    let wte: Vec<f32> = weights["transformer.wte.weight"]
        .to_data()
        .unwrap()
        .to_vec()
        .unwrap();
    let ours: Vec<f32> = model
        .embedding
        .embedding
        .weight
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(wte, ours);
    // The GPT-2 inside computes the case's logits.
    let hf_case: memlab_cli::hf::HfCase =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
    let segment = &hf_case.segments[0];
    let (batch, len) = (segment.input.len(), segment.input[0].len());
    let ids: Vec<i64> = segment.input.iter().flatten().copied().collect();
    let tokens = burn::tensor::Tensor::<Flex, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(ids, [batch, len]),
        &device,
    );
    let logits: Vec<f32> = model
        .embedding
        .logits(model.hidden(tokens))
        .into_data()
        .to_vec()
        .unwrap();
    let want: Vec<f64> = segment.logits.iter().flatten().flatten().copied().collect();
    let (_, worst) = memlab_cli::lm_rmt::errors(&logits, &want);
    assert!(worst < 1e-5, "worst relative error {worst}");
    // A segment too long for the learned positions is refused.
    let text_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text_config.replace("segment_len = 9", &format!("segment_len = {too_long}")),
    )
    .unwrap();
    std::fs::remove_dir_all(&run_dir).unwrap();
    assert_fails_with(&import(), "n_positions");
    assert!(!run_dir.join("checkpoint.mpk").exists());
    // The run trains on from the imported weights.
    std::fs::write(&config, text_config).unwrap();
    assert!(import().status.success());
    let out = memlab(&[
        "train",
        "--config",
        run_dir.join("config.toml").to_str().unwrap(),
        "--resume",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `memlab compare` with `init_from`: every cell starts from the Hugging
/// Face folder (its sizes in the cell's `[model]`, its weights at step 0),
/// a finished cell is kept on a second run, and a folder that is not a
/// model is an error naming the field before anything trains.
#[test]
fn a_comparison_fine_tunes_from_a_hugging_face_folder() {
    use memlab_train::checkpoint::Checkpoint;

    let dir = tempfile::tempdir().unwrap();
    let case = &hf_cases()[0];
    let config = dir.path().join("compare.toml");
    let write = |init_from: &Path| {
        std::fs::write(
            &config,
            format!(
                "[run]\nname = \"ft\"\nout_dir = \"{out}\"\n[task]\nkind = \"copy\"\nlength = 3\n\
                 vocab_size = 41\n[train]\nsteps = 3\nwarmup_steps = 1\nbatch_size = 2\n\
                 segment_len = 9\neval_batches = 1\n[compare]\nseeds = [1, 2]\n\
                 [[compare.models]]\narch = \"gpt2\"\ninit_from = \"{from}\"\n\
                 [[compare.models]]\narch = \"gpt2-ltm\"\ninit_from = \"{from}\"\n\
                 long_term = {{ num_basis = 8, num_samples = 8 }}\n",
                out = dir.path().display(),
                from = init_from.display(),
            ),
        )
        .unwrap();
    };
    let compare = || memlab(&["compare", "--config", config.to_str().unwrap()]);
    // Not a model folder: named, nothing trained.
    write(&dir.path().join("nowhere"));
    assert_fails_with(&compare(), "init_from");
    assert!(!dir.path().join("ft").exists());

    write(case);
    let out = compare();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cell = dir.path().join("ft/default-gpt2-ltm-seed2");
    let saved: toml::Table =
        toml::from_str(&std::fs::read_to_string(cell.join("config.toml")).unwrap()).unwrap();
    assert_eq!(
        saved["model"]["n_embd"].as_integer(),
        Some(32),
        "config.json's sizes"
    );
    assert_eq!(
        Checkpoint::load(&cell.join("checkpoint.mpk"), "gpt2-ltm")
            .unwrap()
            .step,
        3
    );
    // Run again: the cells' configs (config.json's sizes in them) are the
    // plan's, so all four are kept, none trained again.
    let again = compare();
    let stderr = text(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("kept (finished before)").count(),
        4,
        "{stderr}"
    );
    assert!(!stderr.contains("done:"), "{stderr}");
}

/// The ∞-former's own GPT-2 with its long-term memory
/// (`scripts/official_gpt2_ltm_fixture.py`: deep-spin/infinite-former's
/// `finetune_gpt2` code run on torch 2.15).
fn official_ltm_case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf-ltm/official-sticky-off")
}

/// A copy of the official case with its `config.json` edited.
fn official_ltm_edited(dir: &Path, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for file in ["case.json", "config.json", "model.safetensors"] {
        std::fs::copy(official_ltm_case().join(file), out.join(file)).unwrap();
    }
    let json = std::fs::read_to_string(out.join("config.json")).unwrap();
    std::fs::write(out.join("config.json"), edit(json)).unwrap();
    out
}

#[test]
fn the_official_infinity_former_gpt2_passes_through_the_binary() {
    let case = official_ltm_case();
    let out = hf_parity(&case);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "{stdout}{}",
        text(&out.stderr)
    );
    // Four blocks: the memory written (block 2) and contracted (3, 4), the
    // KL of every block that read it.
    let report = memlab_cli::hf::run_parity(&case).unwrap();
    let count = |q: &str| report.rows.iter().filter(|r| r.quantity == q).count();
    assert_eq!((count("logits"), count("kl")), (4, 3), "{report:?}");
    assert!(report.worst_rel < 1e-5, "{report:?}");

    let dir = tempfile::tempdir().unwrap();
    // Sticky memories where the official code sampled uniformly: the case
    // tells them apart once the signal is contracted.
    let sticky = official_ltm_edited(dir.path(), "sticky", |c| {
        c.replace("\"sticky_memories\": false", "\"sticky_memories\": true")
    });
    let out = hf_parity(&sticky);
    assert_fails_with(&out, "worst relative error");
    // A variant memlab does not compute is named.
    let finite = official_ltm_edited(dir.path(), "finite", |c| {
        c.replace("\"infinite_memory\": true", "\"infinite_memory\": false")
    });
    assert_fails_with(&hf_parity(&finite), "infinite_memory");
}

#[test]
fn the_official_infinity_former_gpt2_imports_under_gpt2_ltm_only() {
    let dir = tempfile::tempdir().unwrap();
    let case = official_ltm_case();
    // Its blocks are 512 tokens; a copy task of 41 tokens in segments of 9.
    let gpt2 = hf_copy_config(dir.path(), "arch = \"gpt2\"");
    let run_dir = dir.path().join("run");
    assert_fails_with(&hf_import(&case, &gpt2, &run_dir), "gpt2-ltm");
    assert!(!run_dir.exists());
    let ltm = hf_copy_config(
        dir.path(),
        "arch = \"gpt2-ltm\"\n[model.long_term]\nkl_weight = 1e-5",
    );
    let out = hf_import(&case, &ltm, &run_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The official settings, under what the config sets.
    let saved: toml::Table =
        toml::from_str(&std::fs::read_to_string(run_dir.join("config.toml")).unwrap()).unwrap();
    let long_term = saved["model"]["long_term"].as_table().unwrap();
    assert_eq!(long_term["num_basis"].as_integer(), Some(512));
    assert_eq!(long_term["gate"].as_bool(), Some(true));
    assert_eq!(long_term["mu_0"].as_float(), Some(-1.0));
    assert_eq!(long_term["kl_weight"].as_float(), Some(1e-5));
}
