//! A Qwen2-style byte-level BPE tokenizer trained from a corpus, deterministically.
//!
//! The pipeline is Qwen2's `tokenizer.json`: NFC normalizer; pre-tokenizer
//! `Sequence[Split(Qwen2 regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]`;
//! ByteLevel post-processor and decoder; BPE without unknown token (the 256 byte symbols are
//! always in the vocabulary, so any text encodes). The Qwen2-VL special tokens follow the learned
//! vocabulary.
//!
//! The merges are learned by `tokenizers`' own `BpeTrainer` (minimum pair frequency 2, the byte
//! alphabet as initial alphabet), as the fixture made by `tests/golden/policy/make_fixtures.py`
//! with the Python `tokenizers` trainer was: that fixture is reproduced byte for byte
//! (`operators/tests/factory.rs`). An earlier hand-written trainer existed because
//! `BpeTrainer`'s priority queue can hold two entries of one pair with the same count after a
//! merge whose token already exists, and which pops first then follows `ahash`'s per-map random
//! seed. It was never observed: on the fixture corpus, a varied corpus and 300 random corpora
//! over a three-letter alphabet (a vocabulary of 300, four trainings each, every map seeded
//! anew), `BpeTrainer` gave the hand-written trainer's merges every time, so the hand-written
//! one was removed (issue 22). `tokenizer_training_is_deterministic_on_random_corpora` (200 of
//! those corpora, three trainings each) and `tokenizer_training_is_deterministic_and_round_trips`
//! guard the determinism that `shareflow init-model` relies on.

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::policy::error::{PolicyError, Result};

/// The pre-tokenizer regex of Qwen2 (transformers' `Qwen2Tokenizer.PRETOKENIZE_REGEX`).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The Qwen2-VL special tokens, in id order, right after the learned vocabulary.
pub const SPECIAL_TOKENS: [&str; 7] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
];

/// A pair seen fewer times than this is not merged (as `make_fixtures.py` trains).
pub const MIN_FREQUENCY: u64 = 2;

/// Number of byte symbols every byte-level vocabulary starts with.
pub const BYTE_SYMBOLS: usize = 256;

fn tok_err(what: &str, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Input(format!("tokenizer: {what}: {e}"))
}

fn pre_tokenizer() -> Result<Sequence> {
    let split = Split::new(
        SplitPattern::Regex(QWEN2_PATTERN.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| tok_err("the Qwen2 pre-tokenizer regex", e))?;
    Ok(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ]))
}

/// Trains a Qwen2-like byte-level BPE on `corpus` with `vocab_size` learned entries (the 256
/// byte symbols included; fewer when the corpus runs out of pairs seen twice), then adds the
/// Qwen2-VL special tokens ([`SPECIAL_TOKENS`]) with ids `learned..learned + 7`.
///
/// Deterministic: the same corpus and size give a byte-identical `tokenizer.json`.
pub fn train_tokenizer(corpus: &[String], vocab_size: usize) -> Result<Tokenizer> {
    if vocab_size < BYTE_SYMBOLS {
        return Err(PolicyError::Input(format!(
            "train_tokenizer: vocab_size {vocab_size} is below the {BYTE_SYMBOLS} byte symbols \
             a byte-level BPE always holds"
        )));
    }
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_normalizer(Some(NFC))
        .map_err(|e| tok_err("setting the normalizer", e))?;
    tok.with_pre_tokenizer(Some(pre_tokenizer()?));
    tok.with_post_processor(Some(ByteLevel::new(false, false, false)));
    tok.with_decoder(Some(ByteLevel::new(false, false, false)));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(MIN_FREQUENCY)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tok.train(&mut trainer, corpus.iter())
        .map_err(|e| tok_err("training the BPE merges", e))?;
    tok.add_special_tokens(SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)))
        .map_err(|e| tok_err("adding the special tokens", e))?;
    Ok(tok)
}
