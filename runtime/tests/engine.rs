//! Dataflow tests of the runtime: grouping, bounded in-flight steps, version feedback.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use shareflow_runtime::timely::dataflow::channels::pact::Pipeline;
use shareflow_runtime::timely::dataflow::operators::{Capability, Inspect, Operator, Probe};
use shareflow_runtime::timely::dataflow::{InputHandle, ProbeHandle};
use shareflow_runtime::{
    ClusterConfig, GroupByKey, GroupStatus, Grouped, PolicyVersion, Step, StepDriver, VersionGate,
    VersionPublish, version_loop,
};

type Rec = (String, Option<usize>, u32);

/// Runs `group_by_key` over `(key, expected, value)` records sent in the given order, one step.
fn run_groups(workers: usize, records: Vec<Rec>) -> Vec<Grouped<String, Rec>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    let records = Arc::new(records);
    ClusterConfig::threads(workers)
        .execute(move |worker| {
            let sink = Arc::clone(&sink);
            let mut input = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<Step, _, _>(|scope| {
                input
                    .to_stream(scope)
                    .container::<Vec<Rec>>()
                    .group_by_key("Group", |r: &Rec| r.0.clone(), |r: &Rec| r.1)
                    .inspect(move |g| sink.lock().map(|mut v| v.push(g.clone())).unwrap_or(()))
                    .probe_with(&probe);
            });
            // Worker i sends every records[j] with j % peers == i: arrival order varies with peers.
            let (index, peers) = (worker.index(), worker.peers());
            for (j, r) in records.iter().enumerate() {
                if j % peers == index {
                    input.send(r.clone());
                }
            }
            input.advance_to(1);
            while probe.less_than(&1) {
                worker.step();
            }
        })
        .expect("dataflow runs");
    let mut v = out.lock().map(|v| v.clone()).unwrap_or_default();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    for g in &mut v {
        g.members.sort();
    }
    v
}

#[test]
fn groups_by_key_with_statuses_independent_of_workers() {
    let mut records = Vec::new();
    for i in 0..3 {
        records.push(("complete".to_string(), Some(3), i));
    }
    records.push(("short".to_string(), Some(3), 0));
    records.push(("short".to_string(), Some(3), 1));
    for i in 0..3 {
        records.push(("over".to_string(), Some(2), i));
    }
    for i in 0..5 {
        records.push(("unsized".to_string(), None, i));
    }
    let one = run_groups(1, records.clone());
    let statuses: Vec<(String, GroupStatus, usize)> = one
        .iter()
        .map(|g| (g.key.clone(), g.status, g.members.len()))
        .collect();
    assert!(statuses.contains(&("complete".into(), GroupStatus::Complete, 3)));
    assert!(statuses.contains(&("short".into(), GroupStatus::Incomplete { expected: 3 }, 2)));
    assert!(statuses.contains(&("over".into(), GroupStatus::Complete, 2)));
    assert!(statuses.contains(&("over".into(), GroupStatus::Overfull { expected: 2 }, 1)));
    assert!(statuses.contains(&("unsized".into(), GroupStatus::Complete, 5)));
    assert_eq!(statuses.len(), 5);
    let mut shuffled = records.clone();
    shuffled.reverse();
    // "over" is the only key whose split (which 2 members come first) depends on arrival order.
    let strip = |v: Vec<Grouped<String, Rec>>| -> Vec<_> {
        v.into_iter().filter(|g| g.key != "over").collect()
    };
    for workers in [2, 4] {
        assert_eq!(
            strip(run_groups(workers, shuffled.clone())),
            strip(one.clone())
        );
    }
}

#[test]
fn a_complete_group_is_emitted_before_its_step_ends() {
    // Feed a complete group and a partial one, and step the worker without advancing the input:
    // the complete group must come out while the step is still open.
    let seen = ClusterConfig::threads(1)
        .execute(|worker| {
            let seen = Rc::new(RefCell::new(Vec::<(String, GroupStatus)>::new()));
            let sink = Rc::clone(&seen);
            let mut input = InputHandle::<Step, _>::new();
            worker.dataflow::<Step, _, _>(|scope| {
                input
                    .to_stream(scope)
                    .container::<Vec<Rec>>()
                    .group_by_key("Group", |r: &Rec| r.0.clone(), |r: &Rec| r.1)
                    .inspect(move |g| sink.borrow_mut().push((g.key.clone(), g.status)));
            });
            input.send(("a".to_string(), Some(2), 0));
            input.send(("b".to_string(), Some(2), 0));
            input.send(("a".to_string(), Some(2), 1));
            input.flush();
            for _ in 0..20 {
                worker.step();
            }
            let early = seen.borrow().clone();
            input.advance_to(1);
            for _ in 0..20 {
                worker.step();
            }
            let late = seen.borrow().clone();
            (early, late)
        })
        .expect("dataflow runs");
    let (early, late) = &seen[0];
    assert_eq!(early, &vec![("a".to_string(), GroupStatus::Complete)]);
    assert_eq!(late.len(), 2);
    assert_eq!(
        late[1],
        ("b".to_string(), GroupStatus::Incomplete { expected: 2 })
    );
}

/// A graph `input -> gate -> slow stage -> publish`, where the slow stage holds each step for a
/// number of its own activations. Returns the events (kind, step, version) in the order they
/// happened and the driver's observed peak of unfinished steps.
fn run_pipeline(steps: u64, max_in_flight: u64, staleness: u64) -> (Vec<(char, Step, u64)>, u64) {
    let out = ClusterConfig::threads(1)
        .execute(move |worker| {
            let events = Rc::new(RefCell::new(Vec::new()));
            let mut input = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            let ev = Rc::clone(&events);
            let ev2 = Rc::clone(&events);
            worker.dataflow::<Step, _, _>(|scope| {
                let (loop_handle, versions) = version_loop(scope, staleness);
                let gated = input
                    .to_stream(scope)
                    .container::<Vec<u64>>()
                    .gate_on_versions(versions)
                    .inspect_core(move |event| {
                        if let Ok((stamp, xs)) = event {
                            let t = stamp.least().copied().unwrap_or_default();
                            for (v, _) in xs {
                                ev.borrow_mut().push(('g', t, v.0));
                            }
                        }
                    });
                let slow = gated.unary_frontier::<shareflow_runtime::timely::container::CapacityContainerBuilder<Vec<u64>>, _, _, _>(
                    Pipeline,
                    "Slow",
                    |_cap, info| {
                        let activator = scope.activator_for(Rc::clone(&info.address));
                        let mut held: BTreeMap<Step, (Capability<Step>, u32, Vec<u64>)> =
                            BTreeMap::new();
                        move |(input, frontier), output| {
                            let port = output.output_index();
                            input.for_each_stamp(|cap, batches| {
                                if let Some(cap) = cap.retain_least(port) {
                                    let e = held.entry(*cap.time()).or_insert((cap, 0, Vec::new()));
                                    for b in batches {
                                        e.2.extend(b.drain(..).map(|(_, x): (PolicyVersion, u64)| x));
                                    }
                                }
                            });
                            let mut done = Vec::new();
                            for (t, (cap, count, xs)) in held.iter_mut() {
                                *count += 1;
                                if *count > 5 && !frontier.less_equal(t) {
                                    output.session(cap).give_iterator(xs.drain(..));
                                    done.push(*t);
                                }
                            }
                            for t in done {
                                held.remove(&t);
                                ev2.borrow_mut().push(('d', t, 0));
                            }
                            if !held.is_empty() {
                                activator.activate();
                            }
                        }
                    },
                );
                slow.probe_with(&probe).publish_versions(loop_handle);
            });
            let mut driver = StepDriver::new(max_in_flight);
            driver.run(worker, &mut input, &probe, steps, |step, input| input.send(step));
            let peak = driver.peak_in_flight();
            let ev = events.borrow().clone();
            (ev, peak)
        })
        .expect("dataflow runs");
    out.into_iter().next().unwrap_or_default()
}

#[test]
fn staleness_zero_is_synchronous_and_on_policy() {
    let (events, peak) = run_pipeline(5, 3, 0);
    assert!(peak <= 3);
    let gates: Vec<(Step, u64)> = events
        .iter()
        .filter(|e| e.0 == 'g')
        .map(|e| (e.1, e.2))
        .collect();
    assert_eq!(
        gates,
        (0..5).map(|t| (t, t)).collect::<Vec<_>>(),
        "step t uses version t"
    );
    // Rollout of step t + 1 never starts before step t is done.
    for t in 0..4 {
        let done = events.iter().position(|e| *e == ('d', t, 0));
        let next = events.iter().position(|e| e.0 == 'g' && e.1 == t + 1);
        assert!(done < next, "{events:?}");
    }
}

#[test]
fn staleness_one_overlaps_rollout_with_the_previous_update() {
    let (events, _) = run_pipeline(6, 3, 1);
    let gates: Vec<(Step, u64)> = events
        .iter()
        .filter(|e| e.0 == 'g')
        .map(|e| (e.1, e.2))
        .collect();
    assert_eq!(gates, vec![(0, 0), (1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]);
    // Step 1 is released before step 0 finished: the overlap pipelining is for.
    let done0 = events.iter().position(|e| *e == ('d', 0, 0));
    let gate1 = events.iter().position(|e| e.0 == 'g' && e.1 == 1);
    assert!(gate1 < done0, "{events:?}");
    // But never more than one version behind: step t + 2 waits for step t.
    for t in 0..4 {
        let done = events.iter().position(|e| *e == ('d', t, 0));
        let later = events.iter().position(|e| e.0 == 'g' && e.1 == t + 2);
        assert!(done < later, "{events:?}");
    }
}

#[test]
fn in_flight_bound_is_respected() {
    for k in [1, 2, 4] {
        let (events, peak) = run_pipeline(8, k, 7);
        assert!(peak <= k, "k={k} peak={peak}");
        // Count, at each gate event, the steps gated but not yet done.
        let mut open = 0u64;
        let mut max_open = 0;
        for e in &events {
            match e.0 {
                'g' => open += 1,
                'd' => open -= 1,
                _ => {}
            }
            max_open = max_open.max(open);
        }
        assert!(max_open <= k, "k={k}: {max_open} open; {events:?}");
        if k > 1 {
            assert!(max_open > 1, "k={k} never overlapped: {events:?}");
        }
    }
}

#[test]
fn metrics_are_aggregated_per_step_on_worker_zero_and_written_as_json_lines() {
    use shareflow_runtime::{CollectMetrics, JsonlSink, MetricRecord, MetricsSink, StepMetrics};
    let collected = Arc::new(Mutex::new(Vec::<StepMetrics>::new()));
    let sink = Arc::clone(&collected);
    ClusterConfig::threads(2)
        .execute(move |worker| {
            let sink = Arc::clone(&sink);
            let mut input = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<Step, _, _>(|scope| {
                input
                    .to_stream(scope)
                    .container::<Vec<MetricRecord>>()
                    .collect_metrics()
                    .inspect(move |m| sink.lock().map(|mut v| v.push(m.clone())).unwrap_or(()))
                    .probe_with(&probe);
            });
            // Each worker reports reward i and one seed per step.
            let i = worker.index() as f64;
            let mut driver = StepDriver::new(1);
            driver.run(worker, &mut input, &probe, 2, |step, input| {
                input.send(MetricRecord::mean("reward/overall", i + step as f64));
                input.send(MetricRecord::sum("seeds", 1.0));
            });
        })
        .expect("dataflow runs");
    let mut steps = collected.lock().map(|v| v.clone()).unwrap_or_default();
    steps.sort_by_key(|m| m.step);
    assert_eq!(steps.len(), 2, "one record per step, on worker 0 only");
    assert_eq!(steps[0].values["reward/overall"], 0.5);
    assert_eq!(steps[1].values["reward/overall"], 1.5);
    assert_eq!(steps[1].values["seeds"], 2.0);
    let mut out = Vec::new();
    let mut jsonl = JsonlSink::new(&mut out);
    for m in &steps {
        jsonl.write_step(m).expect("write to memory");
    }
    assert_eq!(
        String::from_utf8_lossy(&out),
        "{\"reward/overall\":0.5,\"seeds\":2.0,\"step\":0}\n{\"reward/overall\":1.5,\"seeds\":2.0,\"step\":1}\n"
    );
}
