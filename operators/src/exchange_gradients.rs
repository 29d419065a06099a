//! The gradient all-reduce of data-parallel replicas over the dataflow (see [`crate::allreduce`]
//! for the maths and why the sum is bit-identical on any number of replicas).
//!
//! Input: a tick per step (any records; routed to every worker), which the operator holds the
//! step's capability on. Records: [`GradRecord`]s, one per micro-batch a replica computed, sent
//! from the replica's update thread through [`DataflowExchange`] and exchanged **to every other
//! worker** (timely moves them between threads, or serialises them between processes). Emits:
//! nothing downstream; each worker's sink hands the records it receives to its own update thread.
//! A step's capability is released when the thread says the step's update is done (or the thread
//! is gone), so the exchange never holds a finished dataflow open.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Operator};
use timely::scheduling::SyncActivator;

use shareflow_runtime::Step;
use shareflow_runtime::stage::Failure;

use crate::allreduce::{GradExchange, MicroPayload, MicroResult, ReplicaRank, merge_results};
use crate::policy::candle::Var;
use crate::policy::{PolicyError, Result};

/// One micro-batch's result on its way to the other replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradRecord {
    pub step: Step,
    /// The mini-batch's round within the step.
    pub round: u64,
    /// The replica that computed it.
    pub from: usize,
    pub payload: MicroPayload,
}

enum Outgoing {
    Grad(GradRecord),
    /// The step's update is done on this replica: release its capability.
    Done(Step),
}

/// A replica's end of the exchange, used by its update thread (implements [`GradExchange`]).
pub struct DataflowExchange {
    rank: ReplicaRank,
    step: Step,
    out: Sender<Outgoing>,
    activator: Arc<Mutex<Option<SyncActivator>>>,
    inbox: Receiver<GradRecord>,
    /// Records of rounds this replica has not reached yet.
    early: BTreeMap<(Step, u64), Vec<GradRecord>>,
    failure: Failure,
}

impl std::fmt::Debug for DataflowExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataflowExchange")
            .field("rank", &self.rank)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl DataflowExchange {
    /// The records that follow go to `step`'s update.
    pub fn begin_step(&mut self, step: Step) {
        self.step = step;
    }

    /// `step`'s update is done here (its capability may go).
    pub fn end_step(&mut self, step: Step) {
        self.early.retain(|&(s, _), _| s > step);
        self.send(Outgoing::Done(step));
    }

    fn send(&self, o: Outgoing) {
        // The operator is gone only when the dataflow is shutting down after a failure.
        let _ = self.out.send(o);
        if let Ok(a) = self.activator.lock()
            && let Some(a) = a.as_ref()
        {
            let _ = a.activate();
        }
    }
}

impl GradExchange for DataflowExchange {
    fn rank(&self) -> ReplicaRank {
        self.rank
    }

    fn all_gather(
        &mut self,
        round: u64,
        mine: Vec<MicroResult>,
        count: usize,
        vars: &[Var],
    ) -> Result<Vec<MicroResult>> {
        for m in &mine {
            self.send(Outgoing::Grad(GradRecord {
                step: self.step,
                round,
                from: self.rank.index,
                payload: m.to_payload()?,
            }));
        }
        let want = count.saturating_sub(mine.len());
        let mut theirs = self.early.remove(&(self.step, round)).unwrap_or_default();
        while theirs.len() < want {
            match self.inbox.recv_timeout(Duration::from_millis(100)) {
                Ok(r) if (r.step, r.round) == (self.step, round) => theirs.push(r),
                Ok(r) => self.early.entry((r.step, r.round)).or_default().push(r),
                Err(RecvTimeoutError::Timeout) => {
                    if self.failure.is_set() {
                        return Err(PolicyError::Input(
                            "gradient exchange: another stage failed".into(),
                        ));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(PolicyError::Input(format!(
                        "gradient exchange: the dataflow stopped before step {} round {round} \
                         had the results of every replica",
                        self.step
                    )));
                }
            }
        }
        let theirs = theirs.into_iter().map(|r| r.payload).collect();
        merge_results(mine, theirs, count, vars)
    }
}

/// Extension trait: the gradient exchange of the replicas of a data-parallel update.
pub trait ExchangeGradients {
    /// Builds the exchange on every worker from a stream with records at each step the update
    /// runs (on every worker: broadcast them). Returns this worker's end, for replica `rank`'s
    /// update thread.
    fn exchange_gradients(self, rank: ReplicaRank, failure: Failure) -> DataflowExchange;
}

impl<'scope, D: Clone + 'static> ExchangeGradients for Stream<'scope, Step, Vec<D>> {
    fn exchange_gradients(self, rank: ReplicaRank, failure: Failure) -> DataflowExchange {
        let (out_tx, out_rx) = crossbeam_channel::unbounded::<Outgoing>();
        let (in_tx, in_rx) = crossbeam_channel::unbounded::<GradRecord>();
        let activator: Arc<Mutex<Option<SyncActivator>>> = Arc::default();
        let slot = Arc::clone(&activator);
        let scope = self.scope();
        let op_failure = failure.clone();
        let sent = self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<GradRecord>>, _, _, _>(
            Pipeline,
            "GradientsOut",
            move |_cap, info| {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(scope.worker().sync_activator_for(info.address.to_vec()));
                }
                let mut caps: BTreeMap<Step, Capability<Step>> = BTreeMap::new();
                // The thread's messages in order: a gradient waits (with all that follows) until
                // its step's tick has come; a step's `Done` releases its capability for good.
                let mut queue: VecDeque<Outgoing> = VecDeque::new();
                let mut finished: BTreeSet<Step> = BTreeSet::new();
                let mut closed = false;
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, batches| {
                        batches.for_each(|b| b.clear());
                        for t in cap.stamp().iter() {
                            if !closed && !finished.contains(t) && !caps.contains_key(t) {
                                caps.insert(*t, cap.delayed(t, port));
                            }
                        }
                    });
                    loop {
                        match out_rx.try_recv() {
                            Ok(o) => queue.push_back(o),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                // The update thread is gone (the run ended or failed).
                                closed = true;
                                break;
                            }
                        }
                    }
                    while let Some(o) = queue.pop_front() {
                        match o {
                            Outgoing::Grad(g) => match caps.get(&g.step) {
                                Some(c) => output.session(c).give(g),
                                None if !frontier.less_equal(&g.step) => {
                                    op_failure.set(format!(
                                        "gradient exchange: step {} has no tick on this worker \
                                         (broadcast the update's ticks)",
                                        g.step
                                    ));
                                }
                                None => {
                                    queue.push_front(Outgoing::Grad(g));
                                    break;
                                }
                            },
                            Outgoing::Done(step) => {
                                caps.remove(&step);
                                finished.insert(step);
                            }
                        }
                    }
                    if closed {
                        queue.clear();
                        caps.clear();
                    }
                    // No tick of a step the input frontier has passed can come any more.
                    finished.retain(|t| frontier.less_equal(t));
                }
            },
        );
        let me = rank.index;
        let peers = rank.replicas;
        sent.flat_map(move |g: GradRecord| {
            (0..peers)
                .filter(move |&w| w != me)
                .map(move |w| (w, g.clone()))
        })
        .sink(
            Exchange::new(|(w, _): &(usize, GradRecord)| *w as u64),
            "GradientsIn",
            move |(input, _)| {
                input.for_each_stamp(|_, batches| {
                    for b in batches {
                        for (_, g) in b.drain(..) {
                            // The thread is gone only after a failure; nothing to hand over.
                            let _ = in_tx.send(g);
                        }
                    }
                });
            },
        );
        DataflowExchange {
            rank,
            step: 0,
            out: out_tx,
            activator,
            inbox: in_rx,
            early: BTreeMap::new(),
            failure,
        }
    }
}
