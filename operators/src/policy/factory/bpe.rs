//! A Qwen2-style byte-level BPE tokenizer trained from a corpus, deterministically.
//!
//! The pipeline is Qwen2's `tokenizer.json`: NFC normalizer; pre-tokenizer
//! `Sequence[Split(Qwen2 regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]`;
//! ByteLevel post-processor and decoder; BPE without unknown token (the 256 byte symbols are
//! always in the vocabulary, so any text encodes). The Qwen2-VL special tokens follow the learned
//! vocabulary.
//!
//! The merges are learned here, with the rule of `tokenizers`' `BpeTrainer` (most frequent pair
//! first, ties to the smallest `(left id, right id)`, alphabet in code point order, merges applied
//! left to right within a word), rather than by that trainer, so that the result is
//! deterministic by construction. `BpeTrainer` keeps a lazy priority queue whose entries carry
//! the words to merge in; entries are pushed in `AHashMap` iteration order, and `ahash` seeds
//! itself at random per process. That order cannot matter while every pair has one live entry,
//! but after a merge whose token string already exists (`"ab" + "c"` after `"a" + "bc"`) a pair
//! can hold two entries with the same count and different word sets, and which pops first is
//! then up to the hash seed. Here a merge is always applied to every word holding the pair, and
//! nothing depends on hash order or threads. Where they are comparable both give the same
//! tokenizer: the fixture made by `tests/golden/policy/make_fixtures.py` with the Python
//! `tokenizers` trainer is reproduced byte for byte, and the Rust trainer's merges are matched on
//! a larger corpus (`operators/tests/factory.rs`; also checked by hand on 18k lines of English
//! at 1000 and 4000 entries, where repeated HF runs, parallel or not, were stable too).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    SplitDelimiterBehavior, Tokenizer,
};

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

/// Word counts of the corpus after normalisation and pre-tokenisation, in a fixed order.
fn count_words(corpus: &[String], pre: &Sequence) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for line in corpus {
        let mut s = PreTokenizedString::from(line.as_str());
        s.normalize(|n| NFC.normalize(n))
            .map_err(|e| tok_err("normalizing the corpus", e))?;
        pre.pre_tokenize(&mut s)
            .map_err(|e| tok_err("pre-tokenizing the corpus", e))?;
        for (word, _, _) in s.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            *counts.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

type Pair = (u32, u32);

/// The learned vocabulary (id order) and merges (rank order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpeModel {
    pub vocab: Vec<String>,
    pub merges: Vec<(String, String)>,
}

/// Learns byte-level BPE merges on `words` until the vocabulary has `vocab_size` entries or no
/// pair is seen `MIN_FREQUENCY` times. The vocabulary starts with the 256 byte symbols in code
/// point order (as the HF trainer orders its alphabet).
pub fn learn_bpe(words: &BTreeMap<String, u64>, vocab_size: usize) -> BpeModel {
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let mut vocab: Vec<String> = alphabet.iter().map(char::to_string).collect();
    let mut ids: HashMap<String, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    let char_id: HashMap<char, u32> = alphabet
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as u32))
        .collect();

    // Words as symbol ids (a char outside the byte alphabet cannot occur after ByteLevel).
    let mut syms: Vec<Vec<u32>> = Vec::with_capacity(words.len());
    let mut counts: Vec<u64> = Vec::with_capacity(words.len());
    for (w, &c) in words {
        syms.push(
            w.chars()
                .filter_map(|ch| char_id.get(&ch).copied())
                .collect(),
        );
        counts.push(c);
    }

    let mut pair_count: HashMap<Pair, u64> = HashMap::new();
    let mut where_: HashMap<Pair, BTreeSet<usize>> = HashMap::new();
    for (i, s) in syms.iter().enumerate() {
        for w in s.windows(2) {
            *pair_count.entry((w[0], w[1])).or_insert(0) += counts[i];
            where_.entry((w[0], w[1])).or_default().insert(i);
        }
    }
    // Max-heap on (count, smallest pair first). Every count change pushes the new value, so
    // an entry whose count differs from the current one is stale and skipped; equal entries
    // are interchangeable.
    let mut heap: BinaryHeap<(u64, Reverse<Pair>)> =
        pair_count.iter().map(|(&p, &c)| (c, Reverse(p))).collect();
    let mut merged: HashSet<Pair> = HashSet::new();
    let mut merges = Vec::new();

    while vocab.len() < vocab_size {
        let Some((count, Reverse(pair))) = heap.pop() else {
            break;
        };
        if pair_count.get(&pair).copied().unwrap_or(0) != count {
            continue;
        }
        if count < MIN_FREQUENCY {
            break;
        }
        let (a, b) = pair;
        let token = format!("{}{}", vocab[a as usize], vocab[b as usize]);
        let new_id = match ids.get(&token) {
            Some(&id) => id,
            None => {
                let id = vocab.len() as u32;
                vocab.push(token.clone());
                ids.insert(token, id);
                id
            }
        };
        if merged.insert(pair) {
            merges.push((vocab[a as usize].clone(), vocab[b as usize].clone()));
        }
        let mut changed: BTreeSet<Pair> = BTreeSet::new();
        for &wi in where_.remove(&pair).unwrap_or_default().iter() {
            let old = &syms[wi];
            if !old.windows(2).any(|w| (w[0], w[1]) == pair) {
                continue;
            }
            let mut new = Vec::with_capacity(old.len());
            let mut i = 0;
            while i < old.len() {
                if i + 1 < old.len() && (old[i], old[i + 1]) == pair {
                    new.push(new_id);
                    i += 2;
                } else {
                    new.push(old[i]);
                    i += 1;
                }
            }
            let c = counts[wi];
            for w in old.windows(2) {
                let p = (w[0], w[1]);
                if let Some(n) = pair_count.get_mut(&p) {
                    *n = n.saturating_sub(c);
                }
                changed.insert(p);
            }
            for w in new.windows(2) {
                let p = (w[0], w[1]);
                *pair_count.entry(p).or_insert(0) += c;
                where_.entry(p).or_default().insert(wi);
                changed.insert(p);
            }
            syms[wi] = new;
        }
        for p in changed {
            let c = pair_count.get(&p).copied().unwrap_or(0);
            if c > 0 {
                heap.push((c, Reverse(p)));
            }
        }
    }
    BpeModel { vocab, merges }
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
    let pre = pre_tokenizer()?;
    let words = count_words(corpus, &pre)?;
    let learned = learn_bpe(&words, vocab_size);
    let vocab: Vocab = learned
        .vocab
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, learned.merges)
        .build()
        .map_err(|e| tok_err("building the BPE model", e))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(NFC))
        .map_err(|e| tok_err("setting the normalizer", e))?;
    tok.with_pre_tokenizer(Some(pre));
    tok.with_post_processor(Some(ByteLevel::new(false, false, false)));
    tok.with_decoder(Some(ByteLevel::new(false, false, false)));
    tok.add_special_tokens(SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)))
        .map_err(|e| tok_err("adding the special tokens", e))?;
    Ok(tok)
}
