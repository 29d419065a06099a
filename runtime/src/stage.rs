//! Heavy stages as timely operators whose work runs on a thread of their own (DESIGN: "Heavy
//! operators hand work to threads of their own over crossbeam channels and wake their operator
//! with a `SyncActivator`").
//!
//! [`offload_groups`] collects a stream's records by step and by a group key, and hands each group
//! to the stage's thread **as soon as it is complete** (the `complete` test on its key and size),
//! so that work on one group starts while others are still arriving. Whatever is left when the
//! step's input is finished goes as the last groups, then [`StageJob::EndOfStep`]. The operator
//! holds the step's capability until the thread says [`StageReply::StepDone`], and emits every
//! record the thread replies at that step meanwhile, so that downstream operators see the step's
//! output as it is made. Other operators and other steps keep running on the worker.
//!
//! The thread side is [`serve_stage`]: it calls the stage's handlers for groups and step ends, and
//! wakes the operator after every reply.

use std::collections::BTreeMap;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::{Capability, Operator};
use timely::scheduling::SyncActivator;

use crate::Step;

/// What the operator sends its thread.
pub enum StageJob<K, D> {
    /// Wake this operator when a reply is sent (sent once, first).
    Activator(SyncActivator),
    /// A group of a step's records (complete, or what was left at the step's end).
    Group { step: Step, key: K, records: Vec<D> },
    /// Every group of `step` has been sent.
    EndOfStep { step: Step },
}

impl<K: std::fmt::Debug, D> std::fmt::Debug for StageJob<K, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Activator(_) => f.write_str("Activator"),
            Self::Group { step, key, records } => {
                write!(f, "Group(step {step}, {key:?}, {} records)", records.len())
            }
            Self::EndOfStep { step } => write!(f, "EndOfStep({step})"),
        }
    }
}

/// What the thread sends back.
#[derive(Debug)]
pub enum StageReply<R> {
    /// Output records of `step` (any number of times before `StepDone`).
    Records { step: Step, records: Vec<R> },
    /// The step's output is complete; its capability is released.
    StepDone { step: Step },
}

/// The two channel ends of a stage's operator (on the worker that runs the thread).
#[derive(Debug)]
pub struct StageEnds<K, D, R> {
    pub jobs: Sender<StageJob<K, D>>,
    pub replies: Receiver<StageReply<R>>,
}

/// The thread's ends, the counterpart of [`StageEnds`].
#[derive(Debug)]
pub struct StageThreadEnds<K, D, R> {
    pub jobs: Receiver<StageJob<K, D>>,
    pub replies: Sender<StageReply<R>>,
}

/// A connected pair of ends: the operator's and the thread's.
pub fn stage_channel<K, D, R>() -> (StageEnds<K, D, R>, StageThreadEnds<K, D, R>) {
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
    let (rep_tx, rep_rx) = crossbeam_channel::unbounded();
    (
        StageEnds {
            jobs: jobs_tx,
            replies: rep_rx,
        },
        StageThreadEnds {
            jobs: jobs_rx,
            replies: rep_tx,
        },
    )
}

/// How a stage's thread sends its output (see [`serve_stage`]).
pub struct StageOutput<R> {
    replies: Sender<StageReply<R>>,
    activator: Option<SyncActivator>,
}

impl<R> std::fmt::Debug for StageOutput<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageOutput")
    }
}

impl<R> StageOutput<R> {
    /// Sends output records of `step`; false when the operator is gone.
    pub fn emit(&self, step: Step, records: Vec<R>) -> bool {
        self.send(StageReply::Records { step, records })
    }

    fn send(&self, reply: StageReply<R>) -> bool {
        let ok = self.replies.send(reply).is_ok();
        if let Some(a) = &self.activator {
            // The worker may have finished; nothing to wake then.
            let _ = a.activate();
        }
        ok
    }
}

/// The handlers of a stage's thread.
pub trait StageHandler<K, D, R> {
    /// Called before each job of `step` and not counted as busy time: wait here for what the
    /// step needs from elsewhere (e.g. a policy version). The default waits for nothing.
    fn prepare(&mut self, _step: Step) -> Result<(), String> {
        Ok(())
    }

    /// A group of `step`'s records (in arrival order).
    fn group(
        &mut self,
        step: Step,
        key: K,
        records: Vec<D>,
        out: &StageOutput<R>,
    ) -> Result<(), String>;

    /// Every group of `step` has been handled.
    fn end_of_step(&mut self, step: Step, out: &StageOutput<R>) -> Result<(), String>;
}

/// Runs a stage's thread: hands every job to `handler` until the operator closes its end, then
/// returns the handler. The first error stops the thread (dropping its ends lets the operator
/// release its steps, so the dataflow finishes and the caller reports the error).
pub fn serve_stage<K, D, R, H: StageHandler<K, D, R>>(
    ends: StageThreadEnds<K, D, R>,
    mut handler: H,
) -> Result<H, String> {
    let mut out = StageOutput {
        replies: ends.replies,
        activator: None,
    };
    for job in ends.jobs.iter() {
        match job {
            StageJob::Activator(a) => out.activator = Some(a),
            StageJob::Group { step, key, records } => {
                handler.prepare(step)?;
                handler.group(step, key, records, &out)?;
            }
            StageJob::EndOfStep { step } => {
                handler.prepare(step)?;
                handler.end_of_step(step, &out)?;
                if !out.send(StageReply::StepDone { step }) {
                    break;
                }
            }
        }
    }
    Ok(handler)
}

struct Pending<K, D> {
    cap: Capability<Step>,
    groups: BTreeMap<K, Vec<D>>,
    /// Complete groups held back until every earlier step has been handed over.
    ready: Vec<K>,
}

/// The operator of a stage (see the module documentation). `ticks` carries at least one record
/// per step that must run even without data (e.g. the step's seeds); `pact`s route `data` and
/// `ticks` to the workers that run threads. A worker whose `ends` is `None` drops what it receives
/// (route nothing to it). Groups of a step are keyed by `key` and sent when `complete(key, len)`;
/// left-over groups go in key order at the step's end. Steps are handed over in order: a complete
/// group of step t waits until every earlier step's `EndOfStep` has been sent (a thread that
/// waits, in a group of step t, for something step t - 1 produces cannot block step t - 1's end).
#[allow(clippy::too_many_arguments)]
pub fn offload_groups<'scope, D, T, K, R, P1, P2>(
    data: Stream<'scope, Step, Vec<D>>,
    ticks: Stream<'scope, Step, Vec<T>>,
    data_pact: P1,
    ticks_pact: P2,
    name: &str,
    key: impl Fn(&D) -> K + 'static,
    complete: impl Fn(&K, usize) -> bool + 'static,
    ends: Option<StageEnds<K, D, R>>,
) -> Stream<'scope, Step, Vec<R>>
where
    D: Clone + 'static,
    T: Clone + 'static,
    K: Ord + Clone + 'static,
    R: Clone + 'static,
    P1: ParallelizationContract<Step, Vec<D>>,
    P2: ParallelizationContract<Step, Vec<T>>,
{
    let scope = data.scope();
    let stage = name.to_string();
    data.binary_frontier(ticks, data_pact, ticks_pact, name, move |_cap, info| {
        let activator = scope.activator_for(std::rc::Rc::clone(&info.address));
        if let Some(e) = &ends {
            let sync = scope.worker().sync_activator_for(info.address.to_vec());
            let _ = e.jobs.send(StageJob::Activator(sync));
        }
        let mut pending: BTreeMap<Step, Pending<K, D>> = BTreeMap::new();
        // Steps handed over (all groups sent), waiting for `StepDone`; and steps with groups
        // in flight, whose capability the pending entry or this map holds.
        let mut running: BTreeMap<Step, Capability<Step>> = BTreeMap::new();
        let mut failed = false;
        move |(in1, f1), (in2, f2), output| {
            let port = output.output_index();
            let Some(ends) = &ends else {
                in1.for_each_stamp(|_, batches| batches.for_each(|b| b.clear()));
                in2.for_each_stamp(|_, batches| batches.for_each(|b| b.clear()));
                return;
            };
            let mut send = |job: StageJob<K, D>| {
                if !failed && ends.jobs.send(job).is_err() {
                    tracing::error!("{stage}: its thread has stopped");
                    failed = true;
                }
            };
            in1.for_each_stamp(|cap, batches| {
                let Some(cap) = cap.retain_least(port) else {
                    return;
                };
                let t = *cap.time();
                let oldest = pending
                    .first_key_value()
                    .is_none_or(|(&first, _)| first >= t);
                let entry = pending.entry(t).or_insert_with(|| Pending {
                    cap,
                    groups: BTreeMap::new(),
                    ready: Vec::new(),
                });
                for b in batches {
                    for d in b.drain(..) {
                        let k = key(&d);
                        let g = entry.groups.entry(k.clone()).or_default();
                        g.push(d);
                        if complete(&k, g.len()) {
                            if oldest {
                                let records = entry.groups.remove(&k).unwrap_or_default();
                                send(StageJob::Group {
                                    step: t,
                                    key: k,
                                    records,
                                });
                            } else {
                                entry.ready.push(k);
                            }
                        }
                    }
                }
            });
            in2.for_each_stamp(|cap, batches| {
                batches.for_each(|b| b.clear());
                if let Some(cap) = cap.retain_least(port) {
                    pending.entry(*cap.time()).or_insert_with(|| Pending {
                        cap,
                        groups: BTreeMap::new(),
                        ready: Vec::new(),
                    });
                }
            });
            // Hand over every step both inputs have finished, in order.
            while let Some(entry) = pending.first_entry() {
                let t = *entry.key();
                if f1.less_equal(&t) || f2.less_equal(&t) {
                    break;
                }
                let p = entry.remove();
                for (key, records) in p.groups {
                    send(StageJob::Group {
                        step: t,
                        key,
                        records,
                    });
                }
                send(StageJob::EndOfStep { step: t });
                running.insert(t, p.cap);
            }
            // The oldest step not handed over may now send its complete groups.
            if let Some(mut entry) = pending.first_entry() {
                let t = *entry.key();
                let p = entry.get_mut();
                for k in std::mem::take(&mut p.ready) {
                    if let Some(records) = p.groups.remove(&k) {
                        send(StageJob::Group {
                            step: t,
                            key: k,
                            records,
                        });
                    }
                }
            }
            loop {
                match ends.replies.try_recv() {
                    Ok(StageReply::Records { step, mut records }) => {
                        let cap = running
                            .get(&step)
                            .or_else(|| pending.get(&step).map(|p| &p.cap));
                        if let Some(cap) = cap {
                            output.session(cap).give_container(&mut records);
                        } else {
                            tracing::error!(step, "{stage}: output for a finished step dropped");
                        }
                    }
                    Ok(StageReply::StepDone { step }) => {
                        running.remove(&step);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // The thread is gone: release the steps so the dataflow can finish;
                        // the caller reports the thread's error.
                        running.clear();
                        pending.clear();
                        break;
                    }
                }
            }
            if !running.is_empty() || !pending.is_empty() {
                // The thread wakes us on every reply; this is a safety net.
                activator.activate_after(Duration::from_millis(100));
            }
        }
    })
}

/// The first error of a graph's stage threads, shared by all of them: once set, every stage stops
/// taking work (nothing is computed, published or saved after a failure), and blocking waits
/// give up.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    first: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Failure {
    /// Records `error` unless an earlier one is recorded.
    pub fn set(&self, error: impl Into<String>) {
        if let Ok(mut f) = self.first.lock() {
            f.get_or_insert_with(|| error.into());
        }
    }

    /// Whether a stage has failed.
    pub fn is_set(&self) -> bool {
        self.first.lock().map_or(true, |f| f.is_some())
    }

    /// The first error, if any.
    pub fn get(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

/// One busy span of a stage's thread: handling a group or a step's end.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub stage: String,
    pub step: Step,
    /// Seconds since the timeline's origin.
    pub start: f64,
    pub end: f64,
}

/// The busy spans of a graph's stage threads (cheap to clone; clones share the spans).
#[derive(Debug, Clone)]
pub struct Timeline {
    origin: std::time::Instant,
    spans: std::sync::Arc<std::sync::Mutex<Vec<Span>>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// A timeline whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
            spans: std::sync::Arc::default(),
        }
    }

    /// Seconds since the origin.
    pub fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Records a span.
    pub fn record(&self, stage: &str, step: Step, start: f64, end: f64) {
        if let Ok(mut s) = self.spans.lock() {
            s.push(Span {
                stage: stage.to_string(),
                step,
                start,
                end,
            });
        }
    }

    /// The spans so far, by start time.
    pub fn spans(&self) -> Vec<Span> {
        let mut v = self.spans.lock().map(|s| s.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.start.total_cmp(&b.start));
        v
    }
}

/// What the stages of one graph share: the failure flag and the timeline of busy spans.
#[derive(Debug, Clone, Default)]
pub struct StageContext {
    pub failure: Failure,
    pub timeline: Timeline,
}

/// A stage thread, joined with [`StageThread::join`].
#[derive(Debug)]
pub struct StageThread<H> {
    name: String,
    handle: std::thread::JoinHandle<Result<H, String>>,
}

impl<H> StageThread<H> {
    /// Waits for the thread; returns its handler, or its error (a panic is an error too).
    pub fn join(self) -> Result<H, String> {
        self.handle
            .join()
            .map_err(|_| format!("the {} thread panicked", self.name))?
    }
}

/// Starts a stage's thread (named `shareflow-{name}`): [`serve_stage`] with `handler`, stopping
/// before any job once the context's failure is set, recording its own error there, and each
/// handler call as a busy span on the context's timeline.
pub fn spawn_stage<K, D, R, H>(
    name: &str,
    ends: StageThreadEnds<K, D, R>,
    mut handler: H,
    ctx: &StageContext,
) -> Result<StageThread<H>, String>
where
    K: Send + 'static,
    D: Send + 'static,
    R: Send + 'static,
    H: StageHandler<K, D, R> + Send + 'static,
{
    struct Guarded<'a, H> {
        inner: &'a mut H,
        failure: &'a Failure,
        timeline: &'a Timeline,
        name: &'a str,
    }
    impl<K, D, R, H: StageHandler<K, D, R>> StageHandler<K, D, R> for Guarded<'_, H> {
        fn prepare(&mut self, step: Step) -> Result<(), String> {
            self.inner.prepare(step)
        }
        fn group(
            &mut self,
            step: Step,
            key: K,
            records: Vec<D>,
            out: &StageOutput<R>,
        ) -> Result<(), String> {
            if self.failure.is_set() {
                return Err("stopped after another stage failed".into());
            }
            let start = self.timeline.now();
            let r = self.inner.group(step, key, records, out);
            self.timeline
                .record(self.name, step, start, self.timeline.now());
            r
        }
        fn end_of_step(&mut self, step: Step, out: &StageOutput<R>) -> Result<(), String> {
            if self.failure.is_set() {
                return Err("stopped after another stage failed".into());
            }
            let start = self.timeline.now();
            let r = self.inner.end_of_step(step, out);
            self.timeline
                .record(self.name, step, start, self.timeline.now());
            r
        }
    }
    let thread_name = format!("shareflow-{name}");
    let (failure, timeline, stage) = (ctx.failure.clone(), ctx.timeline.clone(), name.to_string());
    let handle = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let guarded = Guarded {
                inner: &mut handler,
                failure: &failure,
                timeline: &timeline,
                name: &stage,
            };
            // A panic must not leave other stages waiting for what this one would have made.
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve_stage(ends, guarded)
            }));
            let outcome = match served {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    Err(format!("the {stage} stage panicked: {what}"))
                }
            };
            match outcome {
                Ok(()) => Ok(handler),
                Err(e) => {
                    failure.set(e.clone());
                    Err(e)
                }
            }
        })
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
    Ok(StageThread {
        name: name.to_string(),
        handle,
    })
}

/// The operator's ends of a stage and its thread: both `None` on a worker without a handler.
pub type StartedStage<K, D, R, H> = (Option<StageEnds<K, D, R>>, Option<StageThread<H>>);

/// Starts the thread of a stage's `handler` (see [`spawn_stage`]) when there is one (on the
/// worker that runs the stage), and returns the ends its [`offload_groups`] operator takes.
pub fn start_stage<K, D, R, H>(
    name: &str,
    handler: Option<H>,
    ctx: &StageContext,
) -> Result<StartedStage<K, D, R, H>, String>
where
    K: Send + 'static,
    D: Send + 'static,
    R: Send + 'static,
    H: StageHandler<K, D, R> + Send + 'static,
{
    match handler {
        Some(h) => {
            let (ends, thread_ends) = stage_channel();
            let thread = spawn_stage(name, thread_ends, h, ctx)?;
            Ok((Some(ends), Some(thread)))
        }
        None => Ok((None, None)),
    }
}
