//! Text language modelling from local files: byte-level corpora in the
//! enwik8 layout and word-level corpora in the WikiText layout, batched as
//! Transformer-XL's ordered LM iterator (`LMOrderedIterator` of
//! kimiyoung/transformer-xl's `data_utils.py`).
//!
//! **Streams.** A split of `N` tokens is cut into `batch` contiguous streams
//! of `n = ⌊N / batch⌋` tokens (the tail is dropped); row `b` of every batch
//! continues row `b` of the batch before. Batch `i` holds, per stream,
//! inputs `s[iL .. iL + l]` and targets `s[iL + 1 .. iL + l + 1]` with
//! `l = min(L, n − 1 − iL)`: the last batch of a split may be shorter. Every
//! position counts. Training and evaluation carry memory from batch to
//! batch ([`Task::streaming`]); past the last batch training starts a new
//! epoch with fresh memory.
//!
//! **Files.** A relative path is looked up in the working directory, then
//! in `$MEMLAB_DATA_DIR`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use memlab_core::config::{ConfigError, Validate, check};
use memlab_core::data::BatchError;
use memlab_core::{HostBatch, Metric, Split, Task, TextCodec};
use serde::{Deserialize, Serialize};

/// The environment variable naming the data directory.
pub const DATA_DIR_VAR: &str = "MEMLAB_DATA_DIR";

/// A data file that is missing, unreadable, too short or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for DataError {}

impl DataError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Finds a data file: as given, then under `$MEMLAB_DATA_DIR`.
pub fn resolve(path: &str) -> Result<PathBuf, DataError> {
    let given = PathBuf::from(path);
    if given.is_file() {
        return Ok(given);
    }
    if given.is_dir() {
        return Err(DataError::new(
            &given,
            "is a directory, not a data file; give the corpus file itself",
        ));
    }
    let mut tried = vec![given.display().to_string()];
    if given.is_relative()
        && let Some(dir) = std::env::var_os(DATA_DIR_VAR)
    {
        let candidate = Path::new(&dir).join(&given);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    let hint = if std::env::var_os(DATA_DIR_VAR).is_none() && given.is_relative() {
        format!(" (set {DATA_DIR_VAR} to the data directory, or give a full path)")
    } else {
        String::new()
    };
    Err(DataError::new(
        &given,
        format!(
            "no such data file; looked at {}{hint}. `memlab data download` fetches the public corpora",
            tried.join(", ")
        ),
    ))
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))
}

/// Token ids of one corpus, per split.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub train: Arc<Vec<u32>>,
    pub valid: Arc<Vec<u32>>,
    pub test: Arc<Vec<u32>>,
}

impl Corpus {
    pub fn split(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// Every split must hold at least two tokens (one input, one target).
    fn check(&self, path: &Path) -> Result<(), DataError> {
        for split in [Split::Train, Split::Valid, Split::Test] {
            let n = self.split(split).len();
            if n < 2 {
                return Err(DataError::new(
                    path,
                    format!(
                        "too short: its {split:?} split holds {n} tokens, at least 2 are needed"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A language-modelling task over a [`Corpus`], read as `batch` streams.
#[derive(Debug, Clone)]
pub struct LmTask {
    pub name: String,
    pub corpus: Corpus,
    pub vocab_size: usize,
    pub metric: Metric,
    /// Tokens per row per batch (`L`, Transformer-XL's `tgt_len` × segments).
    pub seq_len: usize,
    /// How text maps to the task's ids (for `memlab generate`); a word
    /// vocabulary is also kept with the run (`vocab.txt`).
    pub codec: Codec,
}

/// A text task's tokens: bytes, the words of a [`Vocab`], or the BPE
/// tokens of a Hugging Face `tokenizer.json` ([`Bpe`]).
#[derive(Debug, Clone)]
pub enum Codec {
    Bytes,
    Words(Arc<Vocab>),
    Bpe(Arc<Bpe>),
}

impl TextCodec for Codec {
    fn encode(&self, text: &str) -> Result<Vec<i64>, BatchError> {
        match self {
            Codec::Bytes => Ok(text.bytes().map(i64::from).collect()),
            // Words as the corpus was read: split on whitespace, `<eos>`
            // after every line but a last one without its newline.
            Codec::Words(vocab) => {
                let mut ids: Vec<i64> = words(text).map(|w| vocab.id(w) as i64).collect();
                if !text.ends_with('\n') {
                    ids.pop();
                }
                if ids.is_empty() {
                    return Err(BatchError("the prompt holds no words".into()));
                }
                Ok(ids)
            }
            Codec::Bpe(bpe) => {
                let ids = bpe.encode(text).map_err(BatchError)?;
                if ids.is_empty() {
                    return Err(BatchError("the prompt holds no tokens".into()));
                }
                Ok(ids.into_iter().map(i64::from).collect())
            }
        }
    }

    fn decode(&self, id: i64) -> Vec<u8> {
        match self {
            Codec::Bytes => vec![id as u8],
            Codec::Words(vocab) => match vocab.words.get(id as usize) {
                Some(w) if w == EOS => b"\n".to_vec(),
                Some(w) => format!("{w} ").into_bytes(),
                None => format!("<{id}?> ").into_bytes(),
            },
            Codec::Bpe(bpe) => bpe.token_bytes(id),
        }
    }
}

impl LmTask {
    /// Tokens per stream for `batch_size` streams.
    fn stream_len(&self, split: Split, batch_size: usize) -> usize {
        self.corpus.split(split).len() / batch_size.max(1)
    }
}

impl Task for LmTask {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> HostBatch {
        let n = self.stream_len(split, batch_size);
        let batches = self.batches(split, batch_size).unwrap_or(1).max(1);
        let start = (index % batches) as usize * self.seq_len;
        let len = self.seq_len.min(n.saturating_sub(1 + start));
        let data = self.corpus.split(split);
        let mut batch = HostBatch::empty(batch_size, len);
        for b in 0..batch_size {
            let stream = &data[b * n..(b + 1) * n];
            let window: Vec<i64> = stream[start..start + len + 1]
                .iter()
                .map(|&t| t as i64)
                .collect();
            batch.push_sequence(&window, |_| true);
        }
        batch
    }

    fn batches(&self, split: Split, batch_size: usize) -> Option<u64> {
        let n = self.stream_len(split, batch_size);
        Some(n.saturating_sub(1).div_ceil(self.seq_len) as u64)
    }

    fn streaming(&self) -> bool {
        true
    }

    fn check_batch_size(&self, batch_size: usize) -> Result<(), BatchError> {
        for split in [Split::Train, Split::Valid, Split::Test] {
            let total = self.corpus.split(split).len();
            if self.stream_len(split, batch_size) < 2 {
                return Err(BatchError(format!(
                    "{}: the {split:?} split holds {total} tokens, too few for {batch_size} streams of at least 2 tokens; lower train.batch_size",
                    self.name
                )));
            }
        }
        Ok(())
    }

    fn artifacts(&self) -> Vec<(String, String)> {
        match &self.codec {
            Codec::Bytes => Vec::new(),
            Codec::Words(vocab) => vec![("vocab.txt".into(), vocab.to_text())],
            Codec::Bpe(bpe) => vec![("tokenizer.json".into(), bpe.json.clone())],
        }
    }

    fn codec(&self) -> Option<&dyn TextCodec> {
        Some(&self.codec)
    }
}

/// `[task]` with `kind = "bytes"`: raw bytes, vocabulary 256, bits per
/// character. A file named `enwik8` or `text8` is split as the standard
/// 90M / 5M / 5M (Transformer-XL's `prep_enwik8.py`, `prep_text8.py`);
/// any other file by the `split` fractions, in file order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BytesConfig {
    pub path: String,
    /// Tokens per row per batch.
    pub seq_len: usize,
    /// Train / valid / test fractions of the file (not enwik8 / text8).
    pub split: [f64; 3],
}

impl Default for BytesConfig {
    fn default() -> Self {
        Self {
            path: "tinyshakespeare.txt".into(),
            seq_len: 256,
            split: [0.9, 0.05, 0.05],
        }
    }
}

impl Validate for BytesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check::positive("seq_len", self.seq_len)?;
        if self.split.iter().any(|f| !(f.is_finite() && *f > 0.0))
            || self.split.iter().sum::<f64>() > 1.0 + 1e-9
        {
            return Err(ConfigError::new(
                "split",
                format!(
                    "must be three fractions > 0 summing to at most 1, got {:?}",
                    self.split
                ),
            ));
        }
        Ok(())
    }
}

/// The standard enwik8 / text8 split sizes.
pub const STANDARD_SPLIT: [usize; 3] = [90_000_000, 5_000_000, 5_000_000];

/// Cuts `n` tokens into train / valid / test sizes.
pub fn split_sizes(n: usize, standard: bool, fractions: [f64; 3]) -> [usize; 3] {
    if standard && n >= STANDARD_SPLIT.iter().sum() {
        return STANDARD_SPLIT;
    }
    let train = (fractions[0] * n as f64).round() as usize;
    let valid = ((fractions[1] * n as f64).round() as usize).min(n - train);
    let test = ((fractions[2] * n as f64).round() as usize).min(n - train - valid);
    [train, valid, test]
}

impl BytesConfig {
    pub fn build(&self) -> Result<LmTask, DataError> {
        let path = resolve(&self.path)?;
        let bytes = read(&path)?;
        if bytes.is_empty() {
            return Err(DataError::new(&path, "the corpus is empty"));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let standard = matches!(name.as_deref(), Some("enwik8" | "text8"));
        let [train, valid, test] = split_sizes(bytes.len(), standard, self.split);
        let ids = |range: std::ops::Range<usize>| {
            Arc::new(bytes[range].iter().map(|&b| b as u32).collect::<Vec<_>>())
        };
        let corpus = Corpus {
            train: ids(0..train),
            valid: ids(train..train + valid),
            test: ids(train + valid..train + valid + test),
        };
        corpus.check(&path)?;
        Ok(LmTask {
            name: format!("bytes({})", name.unwrap_or_default()),
            corpus,
            vocab_size: 256,
            metric: Metric::BitsPerCharacter,
            seq_len: self.seq_len,
            codec: Codec::Bytes,
        })
    }
}

/// `[task]` with `kind = "words"`: whitespace-separated words, `<eos>` at
/// the end of every line (Transformer-XL's `Vocab.tokenize` with
/// `add_eos`), a vocabulary built from the training split and saved with
/// the run as `vocab.txt`, perplexity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WordsConfig {
    /// The three files (WikiText: `wiki.train.tokens`, ...).
    pub train: String,
    pub valid: String,
    pub test: String,
    pub seq_len: usize,
    /// Words seen fewer times in training map to `<unk>`.
    pub min_freq: usize,
}

impl Default for WordsConfig {
    fn default() -> Self {
        Self {
            train: "wikitext-103/wiki.train.tokens".into(),
            valid: "wikitext-103/wiki.valid.tokens".into(),
            test: "wikitext-103/wiki.test.tokens".into(),
            seq_len: 128,
            min_freq: 1,
        }
    }
}

impl Validate for WordsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check::positive("seq_len", self.seq_len)?;
        check::positive("min_freq", self.min_freq)
    }
}

/// End of line.
pub const EOS: &str = "<eos>";
/// Out-of-vocabulary words.
pub const UNK: &str = "<unk>";

/// A word vocabulary: `<eos>`, `<unk>`, then the training words by
/// descending count, ties in order of first appearance (as
/// `Counter.most_common` orders them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    pub words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    pub fn build<'a>(tokens: impl IntoIterator<Item = &'a str>, min_freq: usize) -> Self {
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, t) in tokens.into_iter().enumerate() {
            counts.entry(t).or_insert((0, i)).0 += 1;
        }
        let mut by_count: Vec<(&str, usize, usize)> =
            counts.into_iter().map(|(w, (c, f))| (w, c, f)).collect();
        by_count.sort_by_key(|&(_, c, first)| (std::cmp::Reverse(c), first));
        let mut words: Vec<String> = vec![EOS.into(), UNK.into()];
        words.extend(
            by_count
                .into_iter()
                .filter(|&(w, c, _)| c >= min_freq && w != EOS && w != UNK)
                .map(|(w, _, _)| w.to_string()),
        );
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Self { words, index }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The id of `word` (`<unk>`'s when unknown).
    pub fn id(&self, word: &str) -> u32 {
        self.index.get(word).copied().unwrap_or(1)
    }

    /// One word per line, id = line number.
    pub fn to_text(&self) -> String {
        let mut text = self.words.join("\n");
        text.push('\n');
        text
    }
}

/// The words of a text, `<eos>` after every line.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .flat_map(|line| line.split_whitespace().chain(std::iter::once(EOS)))
}

fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|e| {
        DataError::new(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {}); word-level corpora must be UTF-8, use `kind = \"bytes\"` for raw bytes",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

impl WordsConfig {
    pub fn build(&self) -> Result<LmTask, DataError> {
        let paths = [
            resolve(&self.train)?,
            resolve(&self.valid)?,
            resolve(&self.test)?,
        ];
        let texts = paths
            .iter()
            .map(|p| read_text(p))
            .collect::<Result<Vec<_>, _>>()?;
        for (path, text) in paths.iter().zip(&texts) {
            if text.split_whitespace().next().is_none() {
                return Err(DataError::new(path, "the corpus holds no words"));
            }
        }
        let vocab = Vocab::build(words(&texts[0]), self.min_freq);
        let encode = |text: &str| Arc::new(words(text).map(|w| vocab.id(w)).collect::<Vec<_>>());
        let corpus = Corpus {
            train: encode(&texts[0]),
            valid: encode(&texts[1]),
            test: encode(&texts[2]),
        };
        corpus.check(&paths[0])?;
        let name = paths[0]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(LmTask {
            name: format!("words({name}, {} words)", vocab.len()),
            corpus,
            vocab_size: vocab.len(),
            metric: Metric::Perplexity,
            seq_len: self.seq_len,
            codec: Codec::Words(Arc::new(vocab)),
        })
    }
}

/// A Hugging Face tokenizer (`tokenizer.json`, read by the `tokenizers`
/// crate): GPT-2's byte-level BPE, or any other the file describes.
pub struct Bpe {
    pub tokenizer: tokenizers::Tokenizer,
    /// The file as read, kept with a run (`tokenizer.json`).
    pub json: String,
    /// Byte-level tokens' characters back to bytes (GPT-2's
    /// `bytes_to_unicode`, inverted).
    bytes_of: HashMap<char, u8>,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bpe({} tokens)", self.vocab_size())
    }
}

/// GPT-2's map from the 256 bytes to printable characters
/// (`bytes_to_unicode` of its `encoder.py`, which byte-level BPE tokens
/// are written in): printable Latin-1 bytes stand for themselves, the
/// others for 256, 257, ... in byte order.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            (char::from_u32(c).expect("a code point"), b as u8)
        })
        .collect()
}

impl Bpe {
    /// Reads `tokenizer.json`.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let json = read_text(path)?;
        let tokenizer = tokenizers::Tokenizer::from_str(&json)
            .map_err(|e| DataError::new(path, format!("not a Hugging Face tokenizer.json: {e}")))?;
        Ok(Self {
            tokenizer,
            json,
            bytes_of: byte_level_chars(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The ids of `text`, without special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("the tokenizer cannot encode the text: {e}"))
    }

    /// The bytes one token stands for, so that a stream of tokens decodes
    /// to the text even where a character spans two tokens: a byte-level
    /// token's characters mapped back to bytes, else what the tokenizer's
    /// decoder makes of the token alone.
    pub fn token_bytes(&self, id: i64) -> Vec<u8> {
        let Some(token) = u32::try_from(id)
            .ok()
            .and_then(|id| self.tokenizer.id_to_token(id))
        else {
            return format!("<{id}?>").into_bytes();
        };
        let bytes: Option<Vec<u8>> = token
            .chars()
            .map(|c| self.bytes_of.get(&c).copied())
            .collect();
        match bytes {
            Some(bytes) => bytes,
            None => self
                .tokenizer
                .decode(&[id as u32], false)
                .unwrap_or(token)
                .into_bytes(),
        }
    }
}

/// `[task]` with `kind = "bpe"`: text split into the tokens of a Hugging
/// Face `tokenizer.json` (GPT-2's byte-level BPE, or a tokenizer trained
/// with the `tokenizers` package), three files as for `words`, the
/// tokenizer kept with the run, perplexity per token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BpeConfig {
    pub train: String,
    pub valid: String,
    pub test: String,
    /// The tokenizer: a `tokenizer.json` (looked up as data files are).
    pub tokenizer: String,
    pub seq_len: usize,
}

impl Default for BpeConfig {
    fn default() -> Self {
        Self {
            train: "wikitext-2-test.txt".into(),
            valid: "wikitext-2-valid.txt".into(),
            test: "wikitext-2-valid.txt".into(),
            tokenizer: "tokenizer.json".into(),
            seq_len: 128,
        }
    }
}

impl Validate for BpeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check::positive("seq_len", self.seq_len)
    }
}

impl BpeConfig {
    pub fn build(&self) -> Result<LmTask, DataError> {
        let tokenizer_path = resolve(&self.tokenizer)?;
        let bpe = Bpe::read(&tokenizer_path)?;
        let paths = [
            resolve(&self.train)?,
            resolve(&self.valid)?,
            resolve(&self.test)?,
        ];
        let mut splits = Vec::with_capacity(3);
        for path in &paths {
            let ids = bpe
                .encode(&read_text(path)?)
                .map_err(|e| DataError::new(path, e))?;
            splits.push(Arc::new(ids));
        }
        let test = splits.pop().expect("three splits");
        let valid = splits.pop().expect("three splits");
        let train = splits.pop().expect("three splits");
        let corpus = Corpus { train, valid, test };
        corpus.check(&paths[0])?;
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Ok(LmTask {
            name: format!(
                "bpe({}, {} tokens of {})",
                name(&paths[0]),
                bpe.vocab_size(),
                name(&tokenizer_path)
            ),
            corpus,
            vocab_size: bpe.vocab_size(),
            metric: Metric::Perplexity,
            seq_len: self.seq_len,
            codec: Codec::Bpe(Arc::new(bpe)),
        })
    }
}
