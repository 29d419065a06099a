//! The stage operator: groups leave as soon as they are complete, steps are handed over in
//! order, and the thread's replies come out at their step.

use std::sync::{Arc, Mutex};

use shareflow_runtime::stage::{
    StageContext, StageHandler, StageOutput, offload_groups, spawn_stage, stage_channel,
};
use shareflow_runtime::timely::dataflow::channels::pact::Pipeline;
use shareflow_runtime::timely::dataflow::operators::{Inspect, Probe};
use shareflow_runtime::timely::dataflow::{InputHandle, ProbeHandle};
use shareflow_runtime::{ClusterConfig, MapWithStep, Step};

type Log = Arc<Mutex<Vec<String>>>;

/// Logs every job; replies one `(key, size)` record per group.
struct Recorder {
    log: Log,
}

impl StageHandler<char, (char, u32), (char, usize)> for Recorder {
    fn group(
        &mut self,
        step: Step,
        key: char,
        records: Vec<(char, u32)>,
        out: &StageOutput<(char, usize)>,
    ) -> Result<(), String> {
        if let Ok(mut l) = self.log.lock() {
            l.push(format!("group {step} {key} {}", records.len()));
        }
        out.emit(step, vec![(key, records.len())]);
        Ok(())
    }

    fn end_of_step(&mut self, step: Step, _out: &StageOutput<(char, usize)>) -> Result<(), String> {
        if let Ok(mut l) = self.log.lock() {
            l.push(format!("end {step}"));
        }
        Ok(())
    }
}

fn logged(log: &Log) -> Vec<String> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Steps the worker until `log` has `n` entries (or a generous number of rounds).
fn wait_for(worker: &mut shareflow_runtime::timely::worker::Worker, log: &Log, n: usize) {
    for _ in 0..2000 {
        if logged(log).len() >= n {
            return;
        }
        worker.step_or_park(Some(std::time::Duration::from_millis(1)));
    }
}

#[test]
fn complete_groups_leave_early_and_steps_are_handed_over_in_order() {
    let log: Log = Arc::default();
    let outputs: Arc<Mutex<Vec<(Step, char, usize)>>> = Arc::default();
    let seen_before_end: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let (thread_log, sink, before) = (
        Arc::clone(&log),
        Arc::clone(&outputs),
        Arc::clone(&seen_before_end),
    );
    let ctx = StageContext::default();
    let failure = ctx.failure.clone();
    let timeline = ctx.timeline.clone();
    let thread = Arc::new(Mutex::new(None));
    let joins = Arc::clone(&thread);
    ClusterConfig::threads(1)
        .execute(move |worker| {
            let (ends, thread_ends) = stage_channel();
            let handler = Recorder {
                log: Arc::clone(&thread_log),
            };
            let t = spawn_stage("test", thread_ends, handler, &ctx);
            if let (Ok(t), Ok(mut j)) = (t, joins.lock()) {
                *j = Some(t);
            }
            let mut data = InputHandle::<Step, _>::new();
            let mut ticks = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            let sink = Arc::clone(&sink);
            worker.dataflow::<Step, _, _>(|scope| {
                let d = data.to_stream(scope).container::<Vec<(char, u32)>>();
                let t = ticks.to_stream(scope).container::<Vec<()>>();
                // Groups `a` and `b` are complete at two records; `c` never is.
                offload_groups(
                    d,
                    t,
                    Pipeline,
                    Pipeline,
                    "Test",
                    |r: &(char, u32)| r.0,
                    |k: &char, len| *k != 'c' && len == 2,
                    Some(ends),
                )
                .map_with_step("Tag", |(k, n), t| (t, k, n))
                .inspect(move |r| {
                    if let Ok(mut v) = sink.lock() {
                        v.push(*r);
                    }
                })
                .probe_with(&probe);
            });
            // Step 0: a complete, c incomplete, step still open.
            for r in [('a', 1), ('c', 1), ('a', 2)] {
                data.send(r);
            }
            ticks.send(());
            data.flush();
            ticks.flush();
            wait_for(worker, &thread_log, 1);
            if let Ok(mut b) = before.lock() {
                b.push(logged(&thread_log));
            }
            // Step 1's complete group `b` arrives while step 0 is still open (its ticks are).
            data.advance_to(1);
            data.send(('b', 1));
            data.send(('b', 2));
            data.flush();
            for _ in 0..200 {
                worker.step();
            }
            if let Ok(mut b) = before.lock() {
                b.push(logged(&thread_log));
            }
            ticks.advance_to(2);
            data.advance_to(2);
            while probe.less_than(&2) {
                worker.step_or_park(Some(std::time::Duration::from_millis(1)));
            }
        })
        .expect("dataflow runs");
    let before = seen_before_end
        .lock()
        .map(|b| b.clone())
        .unwrap_or_default();
    // Group a left while step 0 was still open.
    assert_eq!(before[0], vec!["group 0 a 2".to_string()]);
    // Step 1's complete group waited for step 0's end.
    assert_eq!(before[1], vec!["group 0 a 2".to_string()]);
    assert_eq!(
        logged(&log),
        vec![
            "group 0 a 2",
            "group 0 c 1",
            "end 0",
            "group 1 b 2",
            "end 1"
        ]
    );
    let mut out = outputs.lock().map(|o| o.clone()).unwrap_or_default();
    out.sort();
    assert_eq!(out, vec![(0, 'a', 2), (0, 'c', 1), (1, 'b', 2)]);
    let t = thread
        .lock()
        .ok()
        .and_then(|mut t| t.take())
        .expect("thread");
    drop(t.join().expect("the stage thread ends cleanly"));
    assert!(!failure.is_set());
    // One busy span per handler call, in order.
    let spans: Vec<(String, Step)> = timeline
        .spans()
        .into_iter()
        .map(|s| (s.stage, s.step))
        .collect();
    let want: Vec<(String, Step)> = [0, 0, 0, 1, 1]
        .iter()
        .map(|&t| ("test".into(), t))
        .collect();
    assert_eq!(spans, want);
}

/// A failing stage records its error, and the dataflow still finishes.
struct Failing;

impl StageHandler<(), u32, u32> for Failing {
    fn group(
        &mut self,
        step: Step,
        _: (),
        _: Vec<u32>,
        _: &StageOutput<u32>,
    ) -> Result<(), String> {
        Err(format!("step {step}: broken"))
    }
    fn end_of_step(&mut self, _: Step, _: &StageOutput<u32>) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_failed_stage_releases_its_steps_and_reports_its_error() {
    let ctx = StageContext::default();
    let failure = ctx.failure.clone();
    ClusterConfig::threads(1)
        .execute(move |worker| {
            let (ends, thread_ends) = stage_channel();
            let t = spawn_stage("failing", thread_ends, Failing, &ctx).expect("spawn");
            let mut data = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<Step, _, _>(|scope| {
                let d = data.to_stream(scope).container::<Vec<u32>>();
                offload_groups(
                    d.clone(),
                    d,
                    Pipeline,
                    Pipeline,
                    "Failing",
                    |_: &u32| (),
                    |_, _| false,
                    Some(ends),
                )
                .probe_with(&probe);
            });
            for step in 0..3u64 {
                data.send(1);
                data.advance_to(step + 1);
            }
            while probe.less_than(&3) {
                worker.step_or_park(Some(std::time::Duration::from_millis(1)));
            }
            assert_eq!(t.join().err().as_deref(), Some("step 0: broken"));
        })
        .expect("dataflow runs");
    assert_eq!(failure.get().as_deref(), Some("step 0: broken"));
}

/// A stage that panics stops the run like one that fails: the failure names the panic.
struct Panicking;

impl StageHandler<(), u32, u32> for Panicking {
    fn group(&mut self, _: Step, _: (), _: Vec<u32>, _: &StageOutput<u32>) -> Result<(), String> {
        panic!("index out of range");
    }
    fn end_of_step(&mut self, _: Step, _: &StageOutput<u32>) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_panicking_stage_sets_the_failure() {
    let ctx = StageContext::default();
    let failure = ctx.failure.clone();
    let (ends, thread_ends) = stage_channel::<(), u32, u32>();
    let t = spawn_stage("panicking", thread_ends, Panicking, &ctx).expect("spawn");
    let _ = ends.jobs.send(shareflow_runtime::stage::StageJob::Group {
        step: 0,
        key: (),
        records: vec![1],
    });
    drop(ends);
    let err = t.join().err().unwrap_or_default();
    assert!(
        err.contains("panicking stage panicked: index out of range"),
        "{err}"
    );
    assert_eq!(failure.get(), Some(err));
}
