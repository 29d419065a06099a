//! New checkpoints from scratch (`policy::factory`): the BPE trainer (against the HF trainer's
//! fixture tokenizer, determinism, round trips), created checkpoints (file set and config fields
//! of the Hub-layout fixture, loading, the init, byte-identical for a seed) and the SFT loss.
//!
//! With `SHAREFLOW_FACTORY_OUT=DIR`, `created_checkpoint_loads_and_scores` also writes the
//! default-spec checkpoint to `DIR/default` and a tied-embedding tiny one to `DIR/tiny-tied`, for
//! `python3 tests/golden/policy/check_created_checkpoint.py DIR/default` (transformers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::Device;
use image::{DynamicImage, Rgb, RgbImage};
use serde_json::Value;
use shareflow_operators::policy::factory::{Init, QWEN2_VL_CHAT_TEMPLATE, SPECIAL_TOKENS};
use shareflow_operators::policy::{
    LoadOptions, OptimConfig, Optimizer, Policy, Sequence, TinyVlSpec, create_random_checkpoint,
    padded_vocab_size, sft_loss, train_tokenizer,
};
use shareflow_runtime::rng::DetRng;
use tokenizers::Tokenizer;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/policy")
}

fn fixture_corpus() -> Result<Vec<String>, std::io::Error> {
    let text = std::fs::read_to_string(golden_dir().join("tokenizer_corpus.txt"))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The fixture corpus plus counting-task lines: enough text for a few hundred merges.
fn corpus() -> Result<Vec<String>, std::io::Error> {
    let mut lines = fixture_corpus()?;
    let shapes = ["circle", "square", "triangle", "star"];
    let colors = ["red", "green", "blue", "yellow"];
    for i in 0..60usize {
        let (s, c) = (shapes[i % 4], colors[(i / 4) % 4]);
        lines.push(format!(
            "How many {c} {s}s are in the image? <think> I count {} {c} {s}s. </think> \\boxed{{{}}}",
            i % 9,
            i % 9
        ));
    }
    Ok(lines)
}

/// 3000 lines of pseudo-English with indentation, numbers, punctuation and some non-ASCII: a
/// larger and more varied corpus than the fixture's (over 1000 merges).
fn varied_corpus() -> Vec<String> {
    let syllables = [
        "ka", "ri", "to", "men", "sa", "lo", "ve", "qu", "an", "th", "er", "in", "é", "ün", "ß",
        "zo", "pla", "st", "ing", "ed",
    ];
    let mut rng = DetRng::from_seed(11);
    let words: Vec<String> = (0..1500)
        .map(|_| {
            let n = 1 + rng.below(4) as usize;
            (0..n)
                .map(|_| syllables[rng.below(syllables.len() as u64) as usize])
                .collect()
        })
        .collect();
    let punct = [",", ".", ":", " =", "(", ")", " +", "!", "?", " 你好"];
    (0..3000)
        .map(|_| {
            let mut line = " ".repeat(4 * rng.below(4) as usize);
            for k in 0..3 + rng.below(10) {
                if k > 0 {
                    line.push(' ');
                }
                match rng.below(10) {
                    0 => line.push_str(&rng.below(1000).to_string()),
                    1 => line.push_str(punct[rng.below(punct.len() as u64) as usize]),
                    _ => line.push_str(&words[rng.below(words.len() as u64) as usize]),
                }
            }
            line
        })
        .collect()
}

/// Small enough that a test trains it in a second.
fn tiny_spec() -> TinyVlSpec {
    TinyVlSpec {
        hidden: 32,
        intermediate: 64,
        layers: 2,
        heads: 2,
        kv_heads: 1,
        mrope_section: [2, 3, 3],
        rope_theta: 10_000.0,
        vision_hidden: 16,
        vision_intermediate: 32,
        vision_depth: 2,
        vision_heads: 2,
        window_size: 56,
        fullatt_block_indexes: vec![1],
        patch_size: 14,
        spatial_merge_size: 2,
        temporal_patch_size: 2,
        min_pixels: 56 * 56,
        max_pixels: 112 * 112,
        tie_word_embeddings: false,
    }
}

fn scratch(name: &str) -> Result<PathBuf, std::io::Error> {
    let dir = std::env::temp_dir().join(format!("shareflow-factory-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

fn read_json(path: &Path) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn file_names(dir: &Path) -> Result<BTreeSet<String>, std::io::Error> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// Squares of a few colours on grey, `n` of them red.
fn counting_image(w: u32, h: u32, n: u32) -> DynamicImage {
    let mut img = RgbImage::from_pixel(w, h, Rgb([128, 128, 128]));
    for k in 0..n + 2 {
        let colour = if k < n {
            Rgb([220, 30, 30])
        } else {
            Rgb([30, 30, 220])
        };
        let (x0, y0) = ((k * 37) % (w - 12), (k * 23 + 5) % (h - 12));
        for y in y0..y0 + 10 {
            for x in x0..x0 + 10 {
                img.put_pixel(x, y, colour);
            }
        }
    }
    DynamicImage::ImageRgb8(img)
}

#[test]
fn trained_tokenizer_reproduces_the_hf_trainers_fixture_tokenizer() -> TestResult {
    // tiny-qwen2_5_vl/tokenizer.json was trained by the HF `tokenizers` BpeTrainer
    // (make_fixtures.py, vocab 440, min frequency 2) on these lines.
    let tok = train_tokenizer(&fixture_corpus()?, 440)?;
    let ours: Value = serde_json::from_str(&tok.to_string(true)?)?;
    let theirs = read_json(&golden_dir().join("tiny-qwen2_5_vl/tokenizer.json"))?;
    assert_eq!(ours["model"]["vocab"], theirs["model"]["vocab"]);
    assert_eq!(ours["model"]["merges"], theirs["model"]["merges"]);
    assert_eq!(ours, theirs);
    let text = std::fs::read_to_string(golden_dir().join("tiny-qwen2_5_vl/tokenizer.json"))?;
    // Byte for byte, as create_random_checkpoint writes it (pretty, with a final newline).
    assert_eq!(format!("{}\n", tok.to_string(true)?), text);
    Ok(())
}

/// `BpeTrainer` can, in principle, pop two queue entries of one pair in an order that follows
/// `ahash`'s random per-map seed (factory/bpe.rs). Small alphabets make tokens that two merges
/// both produce (`a`+`bc`, `ab`+`c`), where that would show: 200 random corpora over {a, b, c},
/// each trained three times (every map seeded anew), must give one tokenizer each.
#[test]
fn tokenizer_training_is_deterministic_on_random_corpora() -> TestResult {
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for corpus in 0..200 {
        let lines: Vec<String> = (0..40)
            .map(|_| {
                let words = 1 + next() % 6;
                (0..words)
                    .map(|_| {
                        let len = 1 + next() % 6;
                        (0..len)
                            .map(|_| ["a", "b", "c"][next() % 3])
                            .collect::<String>()
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let first = train_tokenizer(&lines, 300)?.to_string(false)?;
        for _ in 0..2 {
            assert_eq!(
                train_tokenizer(&lines, 300)?.to_string(false)?,
                first,
                "corpus {corpus}: {lines:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn tokenizer_training_is_deterministic_and_round_trips() -> TestResult {
    let mut lines = corpus()?;
    lines.extend(varied_corpus());
    let a = train_tokenizer(&lines, 2000)?;
    let b = train_tokenizer(&lines, 2000)?;
    let json = a.to_string(true)?;
    assert_eq!(json, b.to_string(true)?, "same corpus, different tokenizer");
    // A reloaded tokenizer.json is the same tokenizer.
    let reloaded: Tokenizer = json.parse()?;
    assert_eq!(reloaded.to_string(true)?, json);

    let learned = a.get_vocab_size(false);
    assert_eq!(learned, 2000);
    for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(a.token_to_id(t), Some((learned + i) as u32), "{t}");
    }
    assert_eq!(a.get_vocab_size(true), learned + SPECIAL_TOKENS.len());

    let unicode = [
        "héllo wörld — naïve café, 你好，世界! 🙂🚀 ∑ x² ≤ ∞",
        "  leading spaces,\ttabs\nand\r\nnewlines \n\n end  ",
        "mixed: <|im_start|>user\nHow many?<|im_end|>\n",
        "Ǆ ǅ ǆ ﬁ Ω Å Ⅻ ١٢٣ 𝔘𝔫𝔦",
        "",
    ];
    let texts: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .chain(unicode.iter().copied())
        .collect();
    for text in texts {
        let enc = a.encode(text, false)?;
        let back = a.decode(enc.get_ids(), false)?;
        assert_eq!(back, text, "round trip");
    }
    // The specials are single tokens; the text around them is split by the BPE.
    let enc = a.encode("<|im_start|>user<|image_pad|>", false)?;
    assert_eq!(enc.get_ids()[0], (learned + 1) as u32);
    assert_eq!(enc.get_ids().last().copied(), Some((learned + 5) as u32));
    // NFC: a decomposed é encodes as the composed one.
    assert_eq!(
        a.encode("e\u{301}", false)?.get_ids(),
        a.encode("\u{e9}", false)?.get_ids()
    );
    // The corpus compresses: common words are single tokens.
    let n = a.encode(" circles", false)?.get_ids().len();
    assert_eq!(n, 1, "` circles` should be one learned token");
    Ok(())
}

#[test]
fn too_small_vocab_is_rejected() -> TestResult {
    let err = train_tokenizer(&fixture_corpus()?, 200).err();
    assert!(
        err.is_some_and(|e| e.to_string().contains("256 byte symbols")),
        "a vocab below 256 must be an error"
    );
    Ok(())
}

#[test]
fn created_checkpoint_loads_and_scores() -> TestResult {
    let tok = train_tokenizer(&corpus()?, 400)?;
    let spec = tiny_spec();
    let dir = scratch("tiny")?;
    create_random_checkpoint(&dir, &spec, &tok, 7)?;

    // The Hub layout of the fixture: same files, same config fields.
    let fixture = golden_dir().join("tiny-qwen2_5_vl");
    assert_eq!(file_names(&dir)?, file_names(&fixture)?);
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "chat_template.json",
    ] {
        let (ours, theirs) = (read_json(&dir.join(f))?, read_json(&fixture.join(f))?);
        assert_eq!(keys(&ours), keys(&theirs), "{f}");
        for sub in ["vision_config", "rope_scaling", "size"] {
            assert_eq!(keys(&ours[sub]), keys(&theirs[sub]), "{f}: {sub}");
        }
    }
    let template = read_json(&fixture.join("chat_template.json"))?;
    assert_eq!(template["chat_template"], QWEN2_VL_CHAT_TEMPLATE);

    // Config values are the spec's, token ids the tokenizer's.
    let cfg = read_json(&dir.join("config.json"))?;
    let learned = tok.get_vocab_size(false) as u64;
    let vocab = padded_vocab_size(&tok);
    assert_eq!(vocab % 64, 0);
    assert!(vocab >= tok.get_vocab_size(true) && vocab < tok.get_vocab_size(true) + 64);
    assert_eq!(cfg["vocab_size"], vocab);
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["Qwen2_5_VLForConditionalGeneration"])
    );
    assert_eq!(cfg["hidden_size"], spec.hidden);
    assert_eq!(cfg["intermediate_size"], spec.intermediate);
    assert_eq!(cfg["num_hidden_layers"], spec.layers);
    assert_eq!(cfg["num_attention_heads"], spec.heads);
    assert_eq!(cfg["num_key_value_heads"], spec.kv_heads);
    assert_eq!(cfg["rope_theta"], spec.rope_theta);
    assert_eq!(
        cfg["rope_scaling"]["mrope_section"],
        serde_json::json!(spec.mrope_section)
    );
    assert_eq!(cfg["tie_word_embeddings"], spec.tie_word_embeddings);
    assert_eq!(cfg["bos_token_id"], learned);
    assert_eq!(cfg["eos_token_id"], learned + 2);
    assert_eq!(cfg["vision_start_token_id"], learned + 3);
    assert_eq!(cfg["image_token_id"], learned + 5);
    assert_eq!(cfg["video_token_id"], learned + 6);
    let v = &cfg["vision_config"];
    assert_eq!(v["hidden_size"], spec.vision_hidden);
    assert_eq!(v["intermediate_size"], spec.vision_intermediate);
    assert_eq!(v["depth"], spec.vision_depth);
    assert_eq!(v["num_heads"], spec.vision_heads);
    assert_eq!(v["window_size"], spec.window_size);
    assert_eq!(v["out_hidden_size"], spec.hidden);
    assert_eq!(
        v["fullatt_block_indexes"],
        serde_json::json!(spec.fullatt_block_indexes)
    );
    let pre = read_json(&dir.join("preprocessor_config.json"))?;
    assert_eq!(pre["min_pixels"], spec.min_pixels);
    assert_eq!(pre["max_pixels"], spec.max_pixels);
    let generation = read_json(&dir.join("generation_config.json"))?;
    assert_eq!(
        generation["eos_token_id"],
        serde_json::json!([learned + 2, learned])
    );

    // It loads (model + processor) and scores a text and an image question.
    let policy = Policy::load(&dir, &Device::Cpu, LoadOptions::default())?;
    let c = policy.model.config();
    assert_eq!(c.text.vocab_size, vocab);
    assert_eq!(c.text.head_dim, spec.head_dim());
    assert_eq!(
        policy.model.params().tensors().count(),
        spec.tensors(vocab).len()
    );
    let text = policy.log_probs(
        "What is 2 + 3?",
        &[],
        "<think> 2 + 3 = 5 </think> \\boxed{5}",
    )?;
    let image = counting_image(90, 70, 3);
    let prompt = policy.prompt("How many red squares?", std::slice::from_ref(&image))?;
    assert_eq!(prompt.images.len(), 1);
    let with_image = policy.log_probs("How many red squares?", &[image], "\\boxed{3}<|im_end|>")?;
    for lp in text.log_probs.iter().chain(&with_image.log_probs) {
        // HF's init: near-uniform next-token distributions.
        assert!(
            lp.is_finite() && (*lp - -(vocab as f32).ln()).abs() < 0.5,
            "{lp}"
        );
    }

    // The init: N(0, 0.02) weights, zero biases, unit norms.
    let planned = spec.tensors(vocab);
    for (name, t) in policy.model.params().tensors() {
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let (init, n) = (planned[name].1, v.len() as f64);
        match init {
            Init::Zeros => assert!(v.iter().all(|x| *x == 0.0), "{name}"),
            Init::Ones => assert!(v.iter().all(|x| *x == 1.0), "{name}"),
            Init::Normal => {
                let mean = v.iter().map(|x| f64::from(*x)).sum::<f64>() / n;
                let var = v
                    .iter()
                    .map(|x| (f64::from(*x) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                let tol = 0.02 * 6.0 / n.sqrt();
                assert!(mean.abs() < tol, "{name}: mean {mean}");
                assert!(
                    (var.sqrt() - 0.02).abs() < 0.02 * 8.0 / n.sqrt(),
                    "{name}: std {}",
                    var.sqrt()
                );
            }
        }
    }

    if let Ok(out) = std::env::var("SHAREFLOW_FACTORY_OUT") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out)?;
        for (name, spec) in [
            ("default", TinyVlSpec::default()),
            (
                "tiny-tied",
                TinyVlSpec {
                    tie_word_embeddings: true,
                    ..tiny_spec()
                },
            ),
        ] {
            let d = out.join(name);
            if d.exists() {
                std::fs::remove_dir_all(&d)?;
            }
            create_random_checkpoint(&d, &spec, &tok, 7)?;
            Policy::load(&d, &Device::Cpu, LoadOptions::default())?;
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn tied_embeddings_and_the_default_spec() -> TestResult {
    let tok = train_tokenizer(&fixture_corpus()?, 400)?;
    let vocab = padded_vocab_size(&tok);
    let tied = TinyVlSpec {
        tie_word_embeddings: true,
        ..tiny_spec()
    };
    let dir = scratch("tied")?;
    create_random_checkpoint(&dir, &tied, &tok, 1)?;
    let policy = Policy::load(&dir, &Device::Cpu, LoadOptions::default())?;
    assert!(!policy.model.params().contains("lm_head.weight"));
    policy.log_probs("Hi", &[], "Hello")?;
    std::fs::remove_dir_all(&dir)?;

    let spec = TinyVlSpec::default();
    spec.validate()?;
    // 1.43 M parameters + 2 x 128 per vocabulary entry (untied).
    assert_eq!(spec.num_params(0), 1_425_216);
    assert_eq!(spec.num_params(1024), 1_425_216 + 256 * 1024);
    let dir = scratch("default")?;
    create_random_checkpoint(&dir, &spec, &tok, 1)?;
    let policy = Policy::load(&dir, &Device::Cpu, LoadOptions::default())?;
    let n: usize = policy
        .model
        .params()
        .tensors()
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(n, spec.num_params(vocab));
    std::fs::remove_dir_all(&dir)?;

    let bad = TinyVlSpec {
        mrope_section: [4, 4, 4],
        ..TinyVlSpec::default()
    };
    let err = create_random_checkpoint(&scratch("bad")?, &bad, &tok, 1).err();
    assert!(err.is_some_and(|e| e.to_string().contains("mrope_section")));
    Ok(())
}

#[test]
fn same_seed_gives_identical_files() -> TestResult {
    let tok = train_tokenizer(&fixture_corpus()?, 300)?;
    let spec = tiny_spec();
    let read_all = |dir: &Path| -> Result<BTreeMap<String, Vec<u8>>, std::io::Error> {
        file_names(dir)?
            .into_iter()
            .map(|f| Ok((f.clone(), std::fs::read(dir.join(&f))?)))
            .collect()
    };
    let (a, b, c) = (scratch("seed-a")?, scratch("seed-b")?, scratch("seed-c")?);
    create_random_checkpoint(&a, &spec, &tok, 42)?;
    create_random_checkpoint(&b, &spec, &tok, 42)?;
    create_random_checkpoint(&c, &spec, &tok, 43)?;
    let (fa, fb, fc) = (read_all(&a)?, read_all(&b)?, read_all(&c)?);
    assert_eq!(fa, fb, "same seed, different files");
    assert_eq!(
        fa["tokenizer.json"],
        format!("{}\n", tok.to_string(true)?).into_bytes()
    );
    for (name, bytes) in &fa {
        assert_eq!(
            fc.get(name) == Some(bytes),
            !name.ends_with(".safetensors"),
            "{name}: only the weights depend on the seed"
        );
    }
    // f32 safetensors with the metadata transformers expects.
    let bytes = &fa["model-00001-of-00002.safetensors"];
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)?;
    assert_eq!(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
    assert!(
        meta.tensors()
            .values()
            .all(|t| t.dtype == safetensors::Dtype::F32)
    );
    // Not empty, not an existing non-empty directory.
    let err = create_random_checkpoint(&a, &spec, &tok, 42).err();
    assert!(err.is_some_and(|e| e.to_string().contains("not empty")));
    for d in [a, b, c] {
        std::fs::remove_dir_all(d)?;
    }
    Ok(())
}

#[test]
fn sft_memorises_a_fixed_batch() -> TestResult {
    let tok = train_tokenizer(&corpus()?, 400)?;
    let dir = scratch("sft")?;
    create_random_checkpoint(&dir, &tiny_spec(), &tok, 3)?;
    let policy = Policy::load(&dir, &Device::Cpu, LoadOptions::default())?;
    let examples = [
        (
            "How many red squares?",
            Some(2),
            "<think> I count 2. </think> \\boxed{2}<|im_end|>",
        ),
        (
            "How many red squares?",
            Some(4),
            "<think> I count 4. </think> \\boxed{4}<|im_end|>",
        ),
        ("What is 3 + 4?", None, "3 + 4 = 7, so \\boxed{7}<|im_end|>"),
    ];
    let mut rows = Vec::new();
    for (q, n, r) in examples {
        let images: Vec<DynamicImage> = n.map(|n| counting_image(84, 84, n)).into_iter().collect();
        let prompt = policy.prompt(q, &images)?;
        let mut ids = prompt.ids.clone();
        ids.extend(policy.processor.encode(r)?);
        rows.push((ids, prompt.ids.len(), prompt.images));
    }
    let batch: Vec<Sequence<'_>> = rows
        .iter()
        .map(|(ids, p, im)| Sequence {
            ids,
            prompt_len: *p,
            images: im,
        })
        .collect();
    let n_resp: usize = rows.iter().map(|(ids, p, _)| ids.len() - p).sum();

    let cfg = OptimConfig {
        lr: 1e-2,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(policy.model.trainable_vars(), cfg)?;
    let mut losses = Vec::new();
    for _ in 0..25 {
        let (loss, n) = sft_loss(&policy.model, &batch)?;
        assert_eq!(n, n_resp as f64);
        losses.push(loss.to_scalar::<f32>()?);
        let grads = loss.backward()?;
        opt.step(&grads)?;
    }
    let (last, _) = sft_loss(&policy.model, &batch)?;
    let (first, last) = (losses[0], last.to_scalar::<f32>()?);
    // Starts at the uniform distribution's ln(vocab); memorised after a few steps.
    let uniform = (padded_vocab_size(&tok) as f32).ln();
    assert!(
        (first - uniform).abs() < 0.3,
        "initial loss {first} vs ln(V) {uniform}"
    );
    assert!(last < 0.1 * first, "loss {first} -> {last}: {losses:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
