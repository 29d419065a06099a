//! Keyed groups per step: the aggregate pattern of timely, for groups whose size may be known.
//!
//! Input: records `D` at step `t`. Exchange: by the stable hash of `key(&d)`, so a group's members
//! meet on one worker. Output: [`Grouped`] records at step `t`.
//!
//! When: a group whose expected size is known (`expected(&d) == Some(n)`) is emitted **as soon as
//! its n-th member arrives** — other groups of the same step may still be arriving. When the
//! input frontier passes `t`, every group left is emitted: [`GroupStatus::Complete`] if its size
//! was not known (the step's input defines it), [`GroupStatus::Incomplete`] if fewer members than
//! expected arrived (e.g. a failed rollout), and members that arrive for an already emitted group
//! come out as [`GroupStatus::Overfull`]. Nothing hangs and nothing partial is silently passed on as
//! complete. Members keep arrival order, which depends on scheduling: consumers that need
//! reproducible arithmetic sort members by a canonical key first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use crate::Step;
use crate::hash::{StableHasher, stable_hash};

type StableMap<K, V> = HashMap<K, V, BuildHasherDefault<StableHasher>>;
type StableSet<K> = HashSet<K, BuildHasherDefault<StableHasher>>;

/// How a group left the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupStatus {
    /// All expected members arrived, or the size was not known and the step's input is finished.
    Complete,
    /// The step's input finished with fewer members than the `expected` size.
    Incomplete {
        /// The size the members announced.
        expected: usize,
    },
    /// Members that arrived after their group of `expected` members was already emitted.
    Overfull {
        /// The size the members announced.
        expected: usize,
    },
}

/// A group of records sharing a key within one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grouped<K, D> {
    /// The key the members share.
    pub key: K,
    /// The members, in arrival order.
    pub members: Vec<D>,
    /// Whether the group is complete.
    pub status: GroupStatus,
}

impl<K, D> Grouped<K, D> {
    /// Whether the group is complete.
    pub fn is_complete(&self) -> bool {
        self.status == GroupStatus::Complete
    }
}

struct Pending<D> {
    expected: Option<usize>,
    members: Vec<D>,
}

struct StepState<K, D> {
    cap: Capability<Step>,
    pending: StableMap<K, Pending<D>>,
    emitted: StableSet<K>,
}

/// Extension trait: group a stream's records by key within each step.
pub trait GroupByKey<'scope, D> {
    /// Groups records by `key` per step; see the module documentation for when groups are emitted.
    /// `expected` gives the group size a record announces, or `None` if the step's input defines it.
    fn group_by_key<K, KF, SF>(
        self,
        name: &str,
        key: KF,
        expected: SF,
    ) -> Stream<'scope, Step, Vec<Grouped<K, D>>>
    where
        K: ExchangeData + Hash + Eq + Ord + Clone,
        KF: Fn(&D) -> K + 'static,
        SF: Fn(&D) -> Option<usize> + 'static;
}

impl<'scope, D: ExchangeData> GroupByKey<'scope, D> for Stream<'scope, Step, Vec<D>> {
    fn group_by_key<K, KF, SF>(
        self,
        name: &str,
        key: KF,
        expected: SF,
    ) -> Stream<'scope, Step, Vec<Grouped<K, D>>>
    where
        K: ExchangeData + Hash + Eq + Ord + Clone,
        KF: Fn(&D) -> K + 'static,
        SF: Fn(&D) -> Option<usize> + 'static,
    {
        let key = Rc::new(key);
        let route = Rc::clone(&key);
        let pact = Exchange::new(move |d: &D| stable_hash(&route(d)));
        self.unary_frontier(pact, name, move |_cap, _info| {
            let mut stash: BTreeMap<Step, StepState<K, D>> = BTreeMap::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each_stamp(|cap, batches| {
                    let Some(cap) = cap.retain_least(port) else {
                        return;
                    };
                    let t = *cap.time();
                    let state = stash.entry(t).or_insert_with(|| StepState {
                        cap,
                        pending: StableMap::default(),
                        emitted: StableSet::default(),
                    });
                    for batch in batches {
                        for d in batch.drain(..) {
                            let k = key(&d);
                            let exp = expected(&d);
                            let entry = state.pending.entry(k.clone()).or_insert_with(|| Pending {
                                expected: exp,
                                members: Vec::new(),
                            });
                            entry.members.push(d);
                            // Members of an already emitted group wait for the frontier (Overfull).
                            if !state.emitted.contains(&k)
                                && entry.expected.is_some_and(|n| entry.members.len() >= n)
                                && let Some(done) = state.pending.remove(&k)
                            {
                                state.emitted.insert(k.clone());
                                output.session(&state.cap).give(Grouped {
                                    key: k,
                                    members: done.members,
                                    status: GroupStatus::Complete,
                                });
                            }
                        }
                    }
                });
                // Release every step the input frontier has passed.
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let state = entry.remove();
                    let mut left: Vec<(K, Pending<D>)> = state.pending.into_iter().collect();
                    left.sort_by(|a, b| a.0.cmp(&b.0));
                    let mut session = output.session(&state.cap);
                    for (k, p) in left {
                        let status = match p.expected {
                            None => GroupStatus::Complete,
                            Some(expected) if state.emitted.contains(&k) => {
                                GroupStatus::Overfull { expected }
                            }
                            Some(expected) => GroupStatus::Incomplete { expected },
                        };
                        if status != GroupStatus::Complete {
                            tracing::warn!(
                                step = *state.cap.time(),
                                got = p.members.len(),
                                ?status,
                                "group released at the end of its step without its expected size"
                            );
                        }
                        session.give(Grouped {
                            key: k,
                            members: p.members,
                            status,
                        });
                    }
                }
            }
        })
    }
}
