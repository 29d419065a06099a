//! The advantage dataflow against a plain sequential computation over the same maths, on seeded
//! random inputs: 1, 2 and 4 workers, shuffled arrival order, and two processes on localhost must
//! all give exactly (bit for bit) the oracle's rows.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;

use shareflow::graphs::Estimator;
use shareflow::operators::StdConvention;
use shareflow::operators::advantage::{global_advantages, grpo_advantages, share_grpo_advantages};
use shareflow::runtime::{ClusterConfig, DetRng};
use shareflow::tools::advantages::{Response, Row, run_advantages};

/// Random seeds with random m in 1..=4, n in 2..=6 and rewards drawn from the math rule's values
/// (ties are common, as in real runs) or uniform.
fn random_input(seed: u64, seeds: usize) -> Vec<Response> {
    let mut rng = DetRng::from_seed(seed);
    let mut out = Vec::new();
    for s in 0..seeds {
        let m = 1 + rng.below(4) as u32;
        let n = 2 + rng.below(5) as u32;
        let uniform = rng.below(4) == 0;
        for j in 0..m {
            for i in 0..n {
                let reward = if uniform {
                    rng.next_f64()
                } else {
                    [0.0, 0.1, 0.9, 1.0][rng.below(4) as usize]
                };
                out.push(Response {
                    seed: format!("q{s}"),
                    variant: j,
                    sample: i,
                    reward,
                });
            }
        }
    }
    out
}

/// The sequential oracle: group in a map, call the plain functions, lay rows out in order.
fn oracle(input: &[Response], estimator: Estimator) -> Vec<Row> {
    let mut order = Vec::new();
    let mut by_seed: BTreeMap<&str, Vec<&Response>> = BTreeMap::new();
    for r in input {
        by_seed
            .entry(&r.seed)
            .or_insert_with(|| {
                order.push(r.seed.as_str());
                Vec::new()
            })
            .push(r);
    }
    let mut rows = Vec::new();
    for seed in order {
        let mut rs = by_seed[seed].clone();
        rs.sort_by_key(|r| (r.variant, r.sample));
        let rewards: Vec<f64> = rs.iter().map(|r| r.reward).collect();
        let m = rs
            .iter()
            .map(|r| r.variant)
            .max()
            .map_or(0, |v| v as usize + 1);
        let n = rs.len() / m;
        let row = |k: usize, j: usize, i: usize, a: f64| Row {
            seed: seed.to_string(),
            context: k as u32,
            variant: j as u32,
            sample: i as u32,
            advantage: a,
        };
        match estimator {
            Estimator::ShareGrpo(conv) => {
                let adv = share_grpo_advantages(&rewards, m, n, conv).expect("well-formed input");
                rows.extend(adv.rows().map(|(k, j, i, a)| row(k, j, i, a)));
            }
            Estimator::ShareGrpoGlobalOnly(conv) => {
                let g = global_advantages(&rewards, m, conv).expect("well-formed input");
                for k in 0..m {
                    for j in 0..m {
                        for i in 0..n {
                            rows.push(row(k, j, i, g[j * n + i]));
                        }
                    }
                }
            }
            Estimator::Grpo | Estimator::DrGrpo | Estimator::Rloo => {
                let sum: f64 = rewards.iter().sum();
                let count = rewards.len() as f64;
                let adv: Vec<f64> = match estimator {
                    Estimator::Grpo => grpo_advantages(&rewards).expect("well-formed input"),
                    // Dr. GRPO: the reward minus the group mean, no std division.
                    Estimator::DrGrpo => rewards.iter().map(|r| r - sum / count).collect(),
                    // RLOO: the reward minus the mean of the group's other rewards.
                    _ => rewards
                        .iter()
                        .map(|r| r - (sum - r) / (count - 1.0))
                        .collect(),
                };
                rows.extend(rs.iter().zip(adv).map(|(r, a)| {
                    row(r.variant as usize, r.variant as usize, r.sample as usize, a)
                }));
            }
        }
    }
    rows
}

fn bits(rows: &[Row]) -> Vec<(String, u32, u32, u32, u64)> {
    rows.iter()
        .map(|r| {
            (
                r.seed.clone(),
                r.context,
                r.variant,
                r.sample,
                r.advantage.to_bits(),
            )
        })
        .collect()
}

#[test]
fn dataflow_equals_oracle_for_any_workers_and_order() {
    for (case, estimator) in [
        Estimator::ShareGrpo(StdConvention::Reference),
        Estimator::ShareGrpo(StdConvention::Paper),
        Estimator::ShareGrpoGlobalOnly(StdConvention::Reference),
        Estimator::Grpo,
        Estimator::DrGrpo,
        Estimator::Rloo,
    ]
    .into_iter()
    .enumerate()
    {
        let input = random_input(11 + case as u64, 120);
        let expected = bits(&oracle(&input, estimator));
        assert!(expected.len() > 120);
        for workers in [1, 2, 4] {
            let mut shuffled = input.clone();
            DetRng::from_seed(workers as u64).shuffle(&mut shuffled);
            // Keep the seeds' first-appearance order the oracle used: the output order is by
            // first appearance, so put one response of each seed first, in the original order.
            let mut firsts: Vec<Response> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for r in &input {
                if seen.insert(r.seed.clone()) {
                    firsts.push(r.clone());
                }
            }
            shuffled.retain(|r| !firsts.iter().any(|f| f == r));
            firsts.extend(shuffled);
            let got = run_advantages(firsts, estimator, &ClusterConfig::threads(workers))
                .expect("dataflow runs");
            assert_same(
                &bits(&got),
                &expected,
                &format!("{estimator:?} with {workers} workers"),
            );
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

#[test]
fn two_processes_on_localhost_equal_the_oracle() {
    let refused = common::shareflow(
        &[
            "advantages",
            "--input",
            "-",
            "--processes",
            "2",
            "--hostfile",
            "h",
        ],
        Some(""),
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs --output FILE"));
    let input = random_input(99, 60);
    let expected = oracle(&input, Estimator::ShareGrpo(StdConvention::Reference));
    let dir = common::temp_dir("cluster");
    let in_path = dir.join("in.jsonl");
    let text: String = input
        .iter()
        .map(|r| {
            serde_json::to_string(r)
                .map(|s| s + "\n")
                .unwrap_or_default()
        })
        .collect();
    std::fs::write(&in_path, text).expect("write input");
    let hostfile = dir.join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .expect("write hostfile");
    let exe = env!("CARGO_BIN_EXE_shareflow");
    let out_path = dir.join("rows.jsonl");
    let spawn = |process: &str| {
        std::process::Command::new(exe)
            .args([
                "advantages",
                "--input",
                in_path.to_str().unwrap_or_default(),
                "--workers",
                "2",
                "--processes",
                "2",
                "--process",
                process,
                "--hostfile",
                hostfile.to_str().unwrap_or_default(),
                "--output",
                out_path.to_str().unwrap_or_default(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn process")
    };
    let p1 = spawn("1");
    let p0 = spawn("0");
    let out0 = p0.wait_with_output().expect("process 0");
    let out1 = p1.wait_with_output().expect("process 1");
    assert!(
        out0.status.success(),
        "{}",
        String::from_utf8_lossy(&out0.stderr)
    );
    assert!(
        out1.status.success(),
        "{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    let text = std::fs::read_to_string(&out_path).expect("process 0 wrote the output");
    let got: Vec<Row> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_same(&bits(&got), &bits(&expected), "two processes");
}

/// Asserts equal rows, reporting only the first difference.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], expected: &[T], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: row count");
    if let Some((g, e)) = got.iter().zip(expected).find(|(g, e)| g != e) {
        panic!("{what}: first difference: got {g:?}, expected {e:?}");
    }
}
