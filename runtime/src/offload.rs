//! Offloading a step's heavy work to a thread of its own (DESIGN: "Heavy operators hand work to
//! threads of their own over crossbeam channels"): [`offload_step`] collects everything a step
//! brings on one worker, sends it as one job when the step's input is complete, keeps the step's
//! capability while the thread works, and emits the thread's reply at that step. Other operators
//! (and other steps) keep running meanwhile; the capability keeps progress tracking honest.

use std::collections::BTreeMap;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use timely::ExchangeData;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use crate::Step;

/// A step's records, handed to the thread.
#[derive(Debug)]
pub struct StepJob<D> {
    pub step: Step,
    pub records: Vec<D>,
}

/// The thread's reply for a step.
#[derive(Debug)]
pub struct StepReply<R> {
    pub step: Step,
    pub records: Vec<R>,
}

/// The two ends an offloaded operator talks to (only on the worker that runs the thread).
#[derive(Debug)]
pub struct OffloadEnds<D, R> {
    pub jobs: Sender<StepJob<D>>,
    pub replies: Receiver<StepReply<R>>,
}

/// Routes every record of `data` to worker 0 and, there, hands each complete step to the thread
/// behind `ends` (in step order). `ticks` carries at least one record per step (e.g. from the
/// source) so that a step whose data is empty still produces a job. Workers other than 0 pass
/// `None` and only forward their records.
pub fn offload_step<'scope, D, T, R>(
    data: Stream<'scope, Step, Vec<D>>,
    ticks: Stream<'scope, Step, Vec<T>>,
    name: &str,
    ends: Option<OffloadEnds<D, R>>,
) -> Stream<'scope, Step, Vec<R>>
where
    D: ExchangeData,
    T: ExchangeData,
    R: Clone + 'static,
{
    let scope = data.scope();
    data.binary_frontier(
        ticks,
        Exchange::new(|_: &D| 0u64),
        Exchange::new(|_: &T| 0u64),
        name,
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut pending: BTreeMap<Step, (Capability<Step>, Vec<D>)> = BTreeMap::new();
            let mut running: BTreeMap<Step, Capability<Step>> = BTreeMap::new();
            let mut failed = false;
            move |(in1, f1), (in2, f2), output| {
                let port = output.output_index();
                in1.for_each_stamp(|cap, batches| {
                    let Some(cap) = cap.retain_least(port) else {
                        return;
                    };
                    let entry = pending
                        .entry(*cap.time())
                        .or_insert_with(|| (cap, Vec::new()));
                    for b in batches {
                        entry.1.append(b);
                    }
                });
                in2.for_each_stamp(|cap, batches| {
                    for b in batches {
                        b.clear();
                    }
                    if let Some(cap) = cap.retain_least(port) {
                        pending
                            .entry(*cap.time())
                            .or_insert_with(|| (cap, Vec::new()));
                    }
                });
                let Some(ends) = &ends else {
                    pending.clear();
                    return;
                };
                // Hand over every step both inputs have finished, in order.
                while let Some(entry) = pending.first_entry() {
                    let t = *entry.key();
                    if f1.less_equal(&t) || f2.less_equal(&t) {
                        break;
                    }
                    let (cap, records) = entry.remove();
                    if !failed && ends.jobs.send(StepJob { step: t, records }).is_err() {
                        tracing::error!(step = t, "{}: its thread has stopped", "offload");
                        failed = true;
                    }
                    running.insert(t, cap);
                }
                loop {
                    match ends.replies.try_recv() {
                        Ok(reply) => {
                            if let Some(cap) = running.remove(&reply.step) {
                                let mut records = reply.records;
                                output.session(&cap).give_container(&mut records);
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            // The thread is gone: release the steps so the dataflow can finish;
                            // the caller reports the thread's error.
                            running.clear();
                            break;
                        }
                    }
                }
                if !running.is_empty() {
                    activator.activate_after(Duration::from_millis(20));
                }
            }
        },
    )
}
