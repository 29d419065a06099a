//! Keeping records by a per-key decision that arrives on another stream (e.g. "expand this seed":
//! adaptive graphs decide from earlier results which records go on).
//!
//! Input: records of step `t` and decisions `(key, keep)` of step `t`; both pipelined (route the
//! decisions to the records' worker first). A record leaves as soon as its key's decision is
//! `true` (and is dropped when it is `false`), so kept keys stream on while others are still
//! undecided; records whose key gets no decision by the end of the step are dropped and counted
//! in a warning.

use std::collections::BTreeMap;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};

use crate::Step;

struct StepState<K, D> {
    cap: Capability<Step>,
    waiting: BTreeMap<K, Vec<D>>,
    decided: BTreeMap<K, bool>,
}

/// Extension trait: keep records by per-key decisions (see the module documentation).
pub trait KeepIf<'scope, D> {
    fn keep_if<K>(
        self,
        decisions: Stream<'scope, Step, Vec<(K, bool)>>,
        key: impl Fn(&D) -> K + 'static,
    ) -> Stream<'scope, Step, Vec<D>>
    where
        K: Ord + Clone + std::fmt::Debug + 'static;
}

impl<'scope, D: Clone + 'static> KeepIf<'scope, D> for Stream<'scope, Step, Vec<D>> {
    fn keep_if<K>(
        self,
        decisions: Stream<'scope, Step, Vec<(K, bool)>>,
        key: impl Fn(&D) -> K + 'static,
    ) -> Stream<'scope, Step, Vec<D>>
    where
        K: Ord + Clone + std::fmt::Debug + 'static,
    {
        self.binary_frontier(
            decisions,
            Pipeline,
            Pipeline,
            "KeepIf",
            move |_cap, _info| {
                let mut steps: BTreeMap<Step, StepState<K, D>> = BTreeMap::new();
                move |(data, f1), (dec, f2), output| {
                    let port = output.output_index();
                    let state = |cap: &Capability<Step>| StepState {
                        cap: cap.clone(),
                        waiting: BTreeMap::new(),
                        decided: BTreeMap::new(),
                    };
                    dec.for_each_stamp(|cap, batches| {
                        let Some(cap) = cap.retain_least(port) else {
                            return;
                        };
                        let s = steps.entry(*cap.time()).or_insert_with(|| state(&cap));
                        for b in batches {
                            for (k, keep) in b.drain(..) {
                                let held = s.waiting.remove(&k).unwrap_or_default();
                                if keep && !held.is_empty() {
                                    output.session(&s.cap).give_iterator(held.into_iter());
                                }
                                s.decided.insert(k, keep);
                            }
                        }
                    });
                    data.for_each_stamp(|cap, batches| {
                        let Some(cap) = cap.retain_least(port) else {
                            return;
                        };
                        let s = steps.entry(*cap.time()).or_insert_with(|| state(&cap));
                        for b in batches {
                            for d in b.drain(..) {
                                let k = key(&d);
                                match s.decided.get(&k) {
                                    Some(true) => output.session(&s.cap).give(d),
                                    Some(false) => {}
                                    None => s.waiting.entry(k).or_default().push(d),
                                }
                            }
                        }
                    });
                    steps.retain(|t, s| {
                        let open = f1.less_equal(t) || f2.less_equal(t);
                        if !open && !s.waiting.is_empty() {
                            tracing::warn!(
                                step = t,
                                keys = ?s.waiting.keys().collect::<Vec<_>>(),
                                "keep_if: no decision for these keys; their records are dropped"
                            );
                        }
                        open
                    });
                }
            },
        )
    }
}
