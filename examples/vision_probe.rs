//! Does a checkpoint look at its images? Accuracy on the embedded eval split per question kind,
//! greedy and sampled (temperatures 0.5 and 1.0, 8 samples; pass@8 at 1.0), once with the real
//! images and once with every image blanked to white. A policy whose accuracy does not drop on
//! blank images answers from the question text alone.
//!
//! With `--rewrite K` the K-th textual rewrite of each question is asked instead of the original
//! (Share-GRPO's rollouts ask rewrites; a policy trained on the originals only may not answer them).
//!
//! ```sh
//! cargo run --release --example vision_probe -- CHECKPOINT_DIR [QUESTIONS=64] [--rewrite K]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use image::{DynamicImage, Rgb};
use shareflow::graphs::train::data::TASK_SEED;
use shareflow::operators::RewardRule;
use shareflow::operators::policy::candle::Device;
use shareflow::operators::policy::{LoadOptions, Policy, SamplingParams};
use shareflow::operators::reward::score_response;
use shareflow::operators::task::{Split, VisualTransform, format_question, shapes_sample};

/// Columns: greedy, t=0.5 mean, t=1.0 mean, pass@8 at t=1.0, count.
type Row = [f64; 5];

fn probe(
    policy: &Policy,
    questions: u64,
    rewrite: usize,
    blank: bool,
) -> anyhow::Result<BTreeMap<&'static str, Row>> {
    let mut table: BTreeMap<&str, Row> = BTreeMap::new();
    for i in 0..questions {
        let s = shapes_sample(TASK_SEED, Split::Eval, i);
        let text = match rewrite {
            0 => &s.question,
            k => s.rewrites.get(k - 1).with_context(|| {
                format!(
                    "question {} has {} rewrites, not {k}",
                    s.id,
                    s.rewrites.len()
                )
            })?,
        };
        let question = format_question(text, VisualTransform::None);
        let mut img = s.image.clone();
        if blank {
            img.pixels_mut().for_each(|p| *p = Rgb([255, 255, 255]));
        }
        let images = [DynamicImage::ImageRgb8(img)];
        let mut row: Row = [0.0, 0.0, 0.0, 0.0, 1.0];
        for (col, temperature, n) in [(0, 0.0, 1), (1, 0.5, 8), (2, 1.0, 8)] {
            let params = SamplingParams {
                temperature,
                top_p: 0.99,
                max_new_tokens: 40,
                ..SamplingParams::default()
            };
            let responses = policy.generate(&question, &images, n, &params, i)?;
            let correct: Vec<f64> = responses
                .iter()
                .map(|r| {
                    score_response(RewardRule::Math, &r.text, &s.answer)
                        .0
                        .accuracy
                })
                .collect();
            row[col] = correct.iter().sum::<f64>() / n as f64;
            if col == 2 {
                row[3] = f64::from(u8::from(correct.iter().any(|&a| a > 0.5)));
            }
        }
        let entry = table.entry(s.kind.name()).or_insert([0.0; 5]);
        entry.iter_mut().zip(row).for_each(|(e, r)| *e += r);
    }
    Ok(table)
}

#[allow(clippy::print_stdout)] // the report is the example's output
fn print(title: &str, table: &BTreeMap<&str, Row>) {
    println!("{title}");
    println!(
        "  {:<22} {:>5} {:>7} {:>7} {:>7} {:>7}",
        "kind", "count", "greedy", "t=0.5", "t=1.0", "pass@8"
    );
    let mut total: Row = [0.0; 5];
    let line = |name: &str, r: &Row| {
        let c = r[4].max(1.0);
        println!(
            "  {name:<22} {:>5} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            r[4],
            r[0] / c,
            r[1] / c,
            r[2] / c,
            r[3] / c
        );
    };
    for (kind, r) in table {
        line(kind, r);
        total.iter_mut().zip(r).for_each(|(t, x)| *t += x);
    }
    line("all", &total);
}

fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: vision_probe CHECKPOINT_DIR [QUESTIONS=64] [--rewrite K]";
    let mut positional = Vec::new();
    let mut rewrite = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rewrite" {
            let k = args.next().context(USAGE)?;
            rewrite = k
                .parse()
                .with_context(|| format!("--rewrite takes a rewrite number, got {k:?}"))?;
        } else {
            positional.push(a);
        }
    }
    let mut positional = positional.into_iter();
    let Some(dir) = positional.next().map(PathBuf::from) else {
        bail!(USAGE);
    };
    let questions: u64 = match positional.next() {
        Some(n) => n
            .parse()
            .with_context(|| format!("QUESTIONS must be a count, got {n:?}"))?,
        None => 64,
    };
    let policy = Policy::load(&dir, &Device::Cpu, LoadOptions::default())?;
    let asked = match rewrite {
        0 => "original questions".to_string(),
        k => format!("rewrite {k}"),
    };
    print(
        &format!("real images, {asked}"),
        &probe(&policy, questions, rewrite, false)?,
    );
    print(
        &format!("blank images, {asked}"),
        &probe(&policy, questions, rewrite, true)?,
    );
    Ok(())
}
