//! Policy-version feedback: the edge that bounds how stale a policy the rollout may use.
//!
//! The end of the graph publishes [`PolicyVersion`]`(t + 1)` once step `t` is complete there (the
//! policy after t + 1 optimizer steps). The token travels back over a timely feedback edge whose
//! summary is `1 + max_staleness`, so it arrives at step `t + 1 + max_staleness`. The gate in front of
//! rollout holds the records of step `t` until the feedback frontier has passed `t` — i.e. every step
//! up to `t - 1 - max_staleness` has finished everywhere — and then releases them tagged with the
//! newest version received. With `max_staleness = 0` this is the synchronous on-policy loop (step t
//! rolls out with the policy after step t - 1); with `1`, the rollout of step t + 1 overlaps the
//! update of step t. Initial steps, for which no token can exist, open with version 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::feedback::Handle;
use timely::dataflow::operators::{Capability, ConnectLoop, Feedback, Operator};
use timely::dataflow::{Scope, Stream};

use crate::Step;

/// The number of optimizer steps applied to a policy (0 = the initial checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyVersion(pub u64);

/// The feedback edge of policy versions: connect its end with [`VersionPublish`], read its
/// stream with [`VersionGate`].
pub struct VersionLoop<'scope> {
    handle: Handle<'scope, Step, Vec<PolicyVersion>>,
}

impl std::fmt::Debug for VersionLoop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VersionLoop")
    }
}

/// Creates the version feedback edge with the given staleness bound. Returns the loop (to be
/// closed by [`VersionPublish::publish_versions`]) and the stream of tokens (for
/// [`VersionGate::gate_on_versions`]).
pub fn version_loop<'scope>(
    scope: Scope<'scope, Step>,
    max_staleness: u64,
) -> (
    VersionLoop<'scope>,
    Stream<'scope, Step, Vec<PolicyVersion>>,
) {
    let (handle, stream) = scope.feedback::<Vec<PolicyVersion>>(1 + max_staleness);
    (VersionLoop { handle }, stream)
}

/// Extension trait: hold a step's records until the policy version it may use is published.
pub trait VersionGate<'scope, D> {
    /// Input: records of step `t`. Output: `(version, record)` at step `t`, emitted once the
    /// version stream's frontier has passed `t`, tagged with the newest version token at or
    /// before `t` (or `PolicyVersion(0)`). Pipeline: no exchange.
    fn gate_on_versions(
        self,
        versions: Stream<'scope, Step, Vec<PolicyVersion>>,
    ) -> Stream<'scope, Step, Vec<(PolicyVersion, D)>>;
}

impl<'scope, D: Clone + 'static> VersionGate<'scope, D> for Stream<'scope, Step, Vec<D>> {
    fn gate_on_versions(
        self,
        versions: Stream<'scope, Step, Vec<PolicyVersion>>,
    ) -> Stream<'scope, Step, Vec<(PolicyVersion, D)>> {
        self.binary_frontier(
            versions,
            Pipeline,
            Pipeline,
            "VersionGate",
            |_cap, _info| {
                let mut held: BTreeMap<Step, (Capability<Step>, Vec<D>)> = BTreeMap::new();
                let mut tokens: BTreeMap<Step, PolicyVersion> = BTreeMap::new();
                move |(data, _data_frontier), (vers, vers_frontier), output| {
                    let port = output.output_index();
                    vers.for_each_stamp(|cap, batches| {
                        let Some(&t) = cap.least() else { return };
                        for b in batches {
                            for v in b.drain(..) {
                                let e = tokens.entry(t).or_insert(v);
                                *e = (*e).max(v);
                            }
                        }
                    });
                    data.for_each_stamp(|cap, batches| {
                        if let Some(cap) = cap.retain_least(port) {
                            let t = *cap.time();
                            let entry = held.entry(t).or_insert_with(|| (cap, Vec::new()));
                            for b in batches {
                                entry.1.append(b);
                            }
                        }
                    });
                    let open = |t: &Step| !vers_frontier.less_equal(t);
                    for (t, (cap, items)) in held.iter_mut() {
                        if !open(t) {
                            break;
                        }
                        if items.is_empty() {
                            continue;
                        }
                        let version = tokens
                            .range(..=*t)
                            .next_back()
                            .map_or(PolicyVersion(0), |(_, v)| *v);
                        output
                            .session(cap)
                            .give_iterator(items.drain(..).map(|d| (version, d)));
                    }
                    // Drained open steps need no capability: late records of an open step arrive
                    // with their own and are forwarded on the next activation.
                    held.retain(|t, (_, items)| !open(t) || !items.is_empty());
                    // Tokens older than the newest one at or before the oldest held step are dead.
                    if let Some((&oldest, _)) = held.first_key_value() {
                        let keep_from = tokens.range(..=oldest).next_back().map(|(t, _)| *t);
                        if let Some(k) = keep_from {
                            tokens = tokens.split_off(&k);
                        }
                    }
                }
            },
        )
    }
}

/// Extension trait: the end of a graph publishes a version token for every step it completes.
pub trait VersionPublish<'scope, D> {
    /// When this stream's frontier passes step `t` (which carried at least one record), sends
    /// `PolicyVersion(t + 1)` into `versions`.
    fn publish_versions(self, versions: VersionLoop<'scope>);
}

impl<'scope, D: 'static> VersionPublish<'scope, D> for Stream<'scope, Step, Vec<D>> {
    fn publish_versions(self, versions: VersionLoop<'scope>) {
        self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<PolicyVersion>>, _, _, _>(
            Pipeline,
            "VersionPublish",
            |_cap, _info| {
                let mut seen: BTreeMap<Step, Capability<Step>> = BTreeMap::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, batches| {
                        for b in batches {
                            b.clear();
                        }
                        if let Some(cap) = cap.retain_least(port) {
                            seen.entry(*cap.time()).or_insert(cap);
                        }
                    });
                    while let Some(entry) = seen.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let t = *entry.key();
                        let cap = entry.remove();
                        output.session(&cap).give(PolicyVersion(t + 1));
                    }
                }
            },
        )
        .connect_loop(versions.handle);
    }
}
