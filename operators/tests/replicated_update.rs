//! Data-parallel replicas against one replica: R replicas on R threads, each computing its share
//! of every mini-batch's micro-batches and swapping results through an exchange, must end with
//! the weights, optimizer state and statistics of `ppo_update_prepared` / `nll_update` on one
//! replica, bit for bit, for any R and micro-batch counts that do not divide evenly.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use candle_core::{Device, Var};
use common::golden_dir;
use shareflow_operators::allreduce::{
    GradExchange, MicroPayload, MicroResult, ReplicaRank, merge_results,
};
use shareflow_operators::policy::{
    LoadOptions, OptimConfig, Optimizer, PolicyModel, PpoConfig, Result as PolicyResult,
};
use shareflow_operators::rl::{
    LossAgg, OldLogProbs, PromptInput, UpdateConfig, UpdateRow, UpdateStats, nll_update,
    nll_update_replicated, old_log_probs, ppo_update_prepared, ppo_update_replicated,
};
use shareflow_runtime::DetRng;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An exchange between threads: every replica sends its results to every other one.
struct ThreadExchange {
    rank: ReplicaRank,
    peers: Vec<Sender<(u64, MicroPayload)>>,
    inbox: Receiver<(u64, MicroPayload)>,
    early: BTreeMap<u64, Vec<MicroPayload>>,
    rounds: u64,
}

impl GradExchange for ThreadExchange {
    fn rank(&self) -> ReplicaRank {
        self.rank
    }

    fn all_gather(
        &mut self,
        round: u64,
        mine: Vec<MicroResult>,
        count: usize,
        vars: &[Var],
    ) -> PolicyResult<Vec<MicroResult>> {
        for m in &mine {
            let p = m.to_payload()?;
            for (i, tx) in self.peers.iter().enumerate() {
                if i != self.rank.index {
                    tx.send((round, p.clone())).expect("peer alive");
                }
            }
        }
        let mut theirs = self.early.remove(&round).unwrap_or_default();
        while theirs.len() + mine.len() < count {
            let (r, p) = self.inbox.recv().expect("peer alive");
            if r == round {
                theirs.push(p);
            } else {
                self.early.entry(r).or_default().push(p);
            }
        }
        self.rounds += 1;
        merge_results(mine, theirs, count, vars)
    }
}

fn exchanges(replicas: usize) -> Vec<ThreadExchange> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..replicas).map(|_| channel()).unzip();
    rxs.into_iter()
        .enumerate()
        .map(|(index, inbox)| ThreadExchange {
            rank: ReplicaRank { index, replicas },
            peers: txs.clone(),
            inbox,
            early: BTreeMap::new(),
            rounds: 0,
        })
        .collect()
}

fn rows() -> Vec<UpdateRow> {
    let spec: [(&[u32], &[u32], f64); 7] = [
        (&[5, 9, 12], &[7, 3], 1.5),
        (&[5, 9, 12], &[8, 2, 11, 4, 6], -0.5),
        (&[4, 13], &[10], 0.75),
        (&[4, 13], &[14, 15, 16, 17, 18, 19, 20], -1.25),
        (&[6, 7, 8, 9], &[21, 22, 23], 0.25),
        (&[6, 7, 8, 9], &[24], -0.75),
        (&[3], &[25, 26, 27, 28], 1.0),
    ];
    spec.iter()
        .map(|(p, r, a)| UpdateRow {
            prompt: PromptInput {
                ids: Arc::new(p.to_vec()),
                images: Arc::new(Vec::new()),
            },
            response: Arc::new(r.to_vec()),
            advantage: *a,
        })
        .collect()
}

fn cfg() -> UpdateConfig {
    UpdateConfig {
        ppo: PpoConfig::default(),
        // 7 rows: mini-batches of 5 and 2 rows; micro-batches of 2: 3 + 1 per epoch.
        mini_batch_rows: 5,
        micro_batch_rows: 2,
        ppo_epochs: 2,
        temperature: 1.0,
        shuffle: true,
        loss_agg: LossAgg::TokenMean,
    }
}

fn model() -> PolicyResult<PolicyModel> {
    PolicyModel::load(
        &golden_dir().join("tiny-qwen2"),
        &Device::Cpu,
        LoadOptions::default(),
    )
}

fn weights(m: &PolicyModel) -> Vec<(String, Vec<f32>)> {
    m.trainable_vars()
        .into_iter()
        .map(|(n, v)| {
            let values = v
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("weights");
            (n, values)
        })
        .collect()
}

type Trained = (Vec<(String, Vec<f32>)>, UpdateStats, String);

/// One update per replica on its own thread; each returns its weights, stats and optimizer state.
fn replicated(
    replicas: usize,
    update: impl Fn(&PolicyModel, &mut Optimizer, &mut ThreadExchange) -> PolicyResult<UpdateStats>
    + Sync,
) -> Vec<Trained> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = exchanges(replicas)
            .into_iter()
            .map(|mut ex| {
                let update = &update;
                scope.spawn(move || {
                    let m = model().expect("model");
                    let mut opt =
                        Optimizer::new(m.trainable_vars(), OptimConfig::default()).expect("opt");
                    let stats = update(&m, &mut opt, &mut ex).expect("update");
                    let state = serde_json::to_string(&opt.state().expect("state")).expect("json");
                    (weights(&m), stats, state)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("replica thread"))
            .collect()
    })
}

#[test]
fn replicas_apply_the_single_replica_ppo_update_bit_for_bit() -> TestResult {
    let rows = rows();
    let cfg = cfg();
    let m = model()?;
    let refs: Vec<&UpdateRow> = rows.iter().collect();
    let lp: OldLogProbs = old_log_probs(&m, None, &refs, &cfg)?;
    let mut opt = Optimizer::new(m.trainable_vars(), OptimConfig::default())?;
    let before = weights(&m);
    let stats = ppo_update_prepared(&m, &mut opt, &rows, &lp, &cfg, &mut DetRng::from_seed(3))?;
    assert_eq!(stats.optimizer_steps, 4, "2 epochs of 2 mini-batches");
    let single = (weights(&m), stats, serde_json::to_string(&opt.state()?)?);
    assert_ne!(single.0, before, "the update changed nothing");

    for replicas in [2, 3] {
        let out = replicated(replicas, |m, opt, ex| {
            let s = ppo_update_replicated(m, opt, &rows, &lp, &cfg, &mut DetRng::from_seed(3), ex)?;
            assert_eq!(ex.rounds, 4, "one exchange per mini-batch");
            Ok(s)
        });
        for (r, got) in out.iter().enumerate() {
            assert!(
                got.0 == single.0,
                "{replicas} replicas: replica {r}'s weights differ"
            );
            assert_eq!(got.1, single.1, "{replicas} replicas: replica {r}'s stats");
            assert_eq!(
                got.2, single.2,
                "{replicas} replicas: replica {r}'s AdamW state"
            );
        }
    }
    Ok(())
}

#[test]
fn replicas_apply_the_single_replica_sft_step_bit_for_bit() -> TestResult {
    let rows = rows();
    let m = model()?;
    let mut opt = Optimizer::new(m.trainable_vars(), OptimConfig::default())?;
    let stats = nll_update(&m, &mut opt, &rows, 3)?;
    let single = (weights(&m), stats, serde_json::to_string(&opt.state()?)?);
    let out = replicated(2, |m, opt, ex| nll_update_replicated(m, opt, &rows, 3, ex));
    for got in &out {
        assert!(got.0 == single.0, "weights differ");
        assert_eq!(got.1, single.1);
        assert_eq!(got.2, single.2);
    }
    Ok(())
}

#[test]
fn a_replica_is_a_deep_copy_that_trains_on_its_own() -> TestResult {
    let m = model()?;
    let r = m.replica()?;
    let before = weights(&m);
    assert_eq!(weights(&r), before);
    let opt = Optimizer::new(m.trainable_vars(), OptimConfig::default())?;
    let mut ropt = opt.replica_for(r.trainable_vars())?;
    // A step on the replica leaves the original alone.
    let (name, var) = &r.trainable_vars()[0];
    let grads = {
        let loss = var.as_tensor().sqr()?.sum_all()?;
        loss.backward()?
    };
    ropt.step(&grads)?;
    assert_eq!(
        weights(&m),
        before,
        "the original changed with the replica ({name})"
    );
    assert_ne!(weights(&r), before);
    Ok(())
}
