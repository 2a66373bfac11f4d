//! `memlab data`: fetches the public corpora the papers use and checks them
//! against their published checksums.
//!
//! Downloading shells out to `curl` and `unzip`, which every platform we
//! target has: a Rust HTTP client would put a TLS stack into every build of
//! memlab for a command run once per machine.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha1::{Digest, Sha1};

/// A file of a corpus, relative to the data directory (and inside the zip).
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    pub path: &'static str,
    /// SHA-1 as published (GluonNLP's dataset registry, the enwik8 page).
    pub sha1: Option<&'static str>,
    pub size: Option<u64>,
}

/// A public corpus: one zip archive.
#[derive(Debug, Clone, Copy)]
pub struct Corpus {
    pub name: &'static str,
    pub url: &'static str,
    pub files: &'static [DataFile],
}

impl Corpus {
    fn archive(&self) -> &'static str {
        self.url.rsplit('/').next().unwrap_or(self.url)
    }
}

/// What `memlab data download` knows.
pub const CORPORA: &[Corpus] = &[
    Corpus {
        name: "enwik8",
        url: "http://mattmahoney.net/dc/enwik8.zip",
        files: &[DataFile {
            path: "enwik8",
            sha1: Some("57b8363b814821dc9d47aa4d41f58733519076b2"),
            size: Some(100_000_000),
        }],
    },
    Corpus {
        name: "text8",
        url: "http://mattmahoney.net/dc/text8.zip",
        // No published checksum that we could confirm: the size is checked.
        files: &[DataFile {
            path: "text8",
            sha1: None,
            size: Some(100_000_000),
        }],
    },
    Corpus {
        name: "wikitext-103",
        url: "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip",
        files: &[
            DataFile {
                path: "wikitext-103/wiki.train.tokens",
                sha1: Some("b7497e2dfe77e72cfef5e3dbc61b7b53712ac211"),
                size: None,
            },
            DataFile {
                path: "wikitext-103/wiki.valid.tokens",
                sha1: Some("c326ac59dc587676d58c422eb8a03e119582f92b"),
                size: None,
            },
            DataFile {
                path: "wikitext-103/wiki.test.tokens",
                sha1: Some("8a5befc548865cec54ed4273cf87dbbad60d1e47"),
                size: None,
            },
        ],
    },
    Corpus {
        name: "wikitext-2",
        url: "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
        files: &[
            DataFile {
                path: "wikitext-2/wiki.train.tokens",
                sha1: Some("863f29c46ef9d167fff4940ec821195882fe29d1"),
                size: None,
            },
            DataFile {
                path: "wikitext-2/wiki.valid.tokens",
                sha1: Some("0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422"),
                size: None,
            },
            DataFile {
                path: "wikitext-2/wiki.test.tokens",
                sha1: Some("c7b8ce0aa086fb34dab808c5c49224211eb2b172"),
                size: None,
            },
        ],
    },
];

/// The corpus called `name`.
pub fn corpus(name: &str) -> Result<&'static Corpus> {
    CORPORA.iter().find(|c| c.name == name).with_context(|| {
        let known: Vec<&str> = CORPORA.iter().map(|c| c.name).collect();
        format!("unknown corpus {name:?}; known: {}", known.join(", "))
    })
}

/// The data directory: `--dir`, else `$MEMLAB_DATA_DIR`, else `./data`.
pub fn data_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| std::env::var_os(memlab_tasks::text::DATA_DIR_VAR).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Hex SHA-1 of a file.
pub fn sha1_hex(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = Sha1::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks every file of `corpus` under `dir`: present, right size, right
/// SHA-1. Returns the verified paths.
pub fn verify(corpus: &Corpus, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut verified = Vec::new();
    for file in corpus.files {
        let path = dir.join(file.path);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "{}: missing; run `memlab data download {}` or put the file there",
                path.display(),
                corpus.name
            )
        })?;
        if let Some(size) = file.size
            && meta.len() != size
        {
            bail!(
                "{}: {} bytes, expected {size}; the file is truncated or another version: delete it and run `memlab data download {}`",
                path.display(),
                meta.len(),
                corpus.name
            );
        }
        if let Some(expected) = file.sha1 {
            let got = sha1_hex(&path)?;
            if got != expected {
                bail!(
                    "{}: SHA-1 {got}, expected {expected}; the file is corrupt or another version: delete it and run `memlab data download {}`",
                    path.display(),
                    corpus.name
                );
            }
        }
        verified.push(path);
    }
    Ok(verified)
}

/// Downloads and unpacks `corpus` into `dir` (from `mirror`/archive when a
/// mirror is given), then verifies it. Files already there and verified are
/// kept.
pub fn download(corpus: &Corpus, dir: &Path, mirror: Option<&str>) -> Result<Vec<PathBuf>> {
    if let Ok(files) = verify(corpus, dir) {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let url = match mirror {
        Some(base) => format!("{}/{}", base.trim_end_matches('/'), corpus.archive()),
        None => corpus.url.to_string(),
    };
    let archive = dir.join(corpus.archive());
    let expected: Vec<String> = corpus
        .files
        .iter()
        .map(|f| dir.join(f.path).display().to_string())
        .collect();
    let offline_help = || {
        format!(
            "this machine may be offline. Download {url} on a machine with network access and unzip it into {} so that these files exist: {}; then `memlab data verify {}` checks them",
            dir.display(),
            expected.join(", "),
            corpus.name
        )
    };
    let fetched = Command::new("curl")
        .args([
            "--fail",
            "--location",
            "--silent",
            "--show-error",
            "--retry",
            "2",
        ])
        .arg("--output")
        .arg(&archive)
        .arg(&url)
        .output();
    match fetched {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let _ = std::fs::remove_file(&archive);
            bail!(
                "could not download {url}: {}; {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                offline_help()
            );
        }
        Err(e) => bail!("could not run curl ({e}); {}", offline_help()),
    }
    let unzipped = Command::new("unzip")
        .args(["-o", "-q"])
        .arg(&archive)
        .arg("-d")
        .arg(dir)
        .output()
        .with_context(|| format!("could not run unzip on {}", archive.display()))?;
    if !unzipped.status.success() {
        bail!(
            "{}: unzip failed: {}",
            archive.display(),
            String::from_utf8_lossy(&unzipped.stderr).trim()
        );
    }
    std::fs::remove_file(&archive).ok();
    verify(corpus, dir)
}
