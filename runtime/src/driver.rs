//! Bounded in-flight steps: the source admits step `t` only while fewer than `max_in_flight`
//! steps are unfinished, as observed by a probe at the end of the graph.

use std::time::Duration;

use timely::ContainerBuilder;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::Step;

/// Feeds steps into a dataflow with probe-based backpressure.
#[derive(Debug, Clone)]
pub struct StepDriver {
    max_in_flight: u64,
    /// Largest number of unfinished steps seen when a step was admitted (for reports and tests).
    peak_in_flight: u64,
}

impl StepDriver {
    /// A driver that keeps at most `max_in_flight` (at least 1) steps unfinished.
    pub fn new(max_in_flight: u64) -> Self {
        Self {
            max_in_flight: max_in_flight.max(1),
            peak_in_flight: 0,
        }
    }

    /// The largest number of unfinished steps observed when admitting a step (this one included).
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight
    }

    /// Runs steps `0..steps`: for each, waits (stepping the worker) until it may be admitted, calls
    /// `feed(step, input)` to send its records, advances the input; then waits until the probe has
    /// passed every step. The input stays open at time `steps` (drop it to close the dataflow).
    pub fn run<CB, F>(
        &mut self,
        worker: &mut Worker,
        input: &mut InputHandle<Step, CB>,
        probe: &ProbeHandle<Step>,
        steps: u64,
        feed: F,
    ) where
        CB: ContainerBuilder<Container: Clone>,
        F: FnMut(Step, &mut InputHandle<Step, CB>),
    {
        self.run_from(worker, input, probe, 0, steps, feed);
    }

    /// Like [`StepDriver::run`] for steps `start..steps` (a resumed run): the input is first
    /// advanced to `start`, so the probe passes the earlier steps without any data. `start >=
    /// steps` feeds nothing.
    pub fn run_from<CB, F>(
        &mut self,
        worker: &mut Worker,
        input: &mut InputHandle<Step, CB>,
        probe: &ProbeHandle<Step>,
        start: u64,
        steps: u64,
        mut feed: F,
    ) where
        CB: ContainerBuilder<Container: Clone>,
        F: FnMut(Step, &mut InputHandle<Step, CB>),
    {
        if start > *input.time() {
            input.advance_to(start);
        }
        for step in start..steps {
            // Admit `step` once the probe shows every step <= step - max_in_flight finished.
            let oldest_allowed = (step + 1).saturating_sub(self.max_in_flight);
            while probe.less_than(&oldest_allowed) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            let done = probe.with_frontier(|f| f.first().copied().unwrap_or(step));
            self.peak_in_flight = self.peak_in_flight.max(step + 1 - done.min(step));
            feed(step, input);
            input.advance_to(step + 1);
            worker.step();
        }
        while probe.less_than(&steps) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    }
}
