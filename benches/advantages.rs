//! Advantage + sharing throughput through the dataflow vs the plain functions (issue: at least
//! 1,000,000 responses/s per worker at m = 2, n = 6). Prints figures; not a timed test.
//!
//!     cargo bench --bench advantages [-- SEEDS]

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use shareflow::graphs::{Estimator, advantage_stage};
use shareflow::operators::advantage::share_grpo_advantages;
use shareflow::operators::{GroupShape, Scored, StdConvention};
use shareflow::runtime::timely::dataflow::operators::{Inspect, Probe};
use shareflow::runtime::timely::dataflow::{InputHandle, ProbeHandle};
use shareflow::runtime::{ClusterConfig, DetRng, Step};

const M: u32 = 2;
const N: u32 = 6;
const SEEDS_PER_STEP: usize = 20_000;

fn rewards(seed: usize) -> Vec<f64> {
    let mut rng = DetRng::derive(1, 0, &seed, 0);
    (0..M * N)
        .map(|_| [0.0, 0.1, 0.9, 1.0][rng.below(4) as usize])
        .collect()
}

/// Plain functions: advantages and the m*m*n rows, no dataflow. Returns responses/s.
fn plain(seeds: usize) -> f64 {
    let inputs: Vec<Vec<f64>> = (0..seeds).map(rewards).collect();
    let start = Instant::now();
    let mut checksum = 0.0;
    let mut rows = 0usize;
    for r in &inputs {
        if let Ok(a) = share_grpo_advantages(r, M as usize, N as usize, StdConvention::Reference) {
            for (_, _, _, adv) in a.rows() {
                checksum += adv;
                rows += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(rows, seeds * (M * M * N) as usize, "{checksum}");
    (seeds * (M * N) as usize) as f64 / secs
}

/// Through the dataflow with `workers` threads, the shape known (groups leave when complete).
/// Returns responses/s for the whole run.
fn dataflow(seeds: usize, workers: usize) -> f64 {
    let steps = seeds.div_ceil(SEEDS_PER_STEP) as u64;
    let start = Instant::now();
    let counts = ClusterConfig::threads(workers)
        .execute(move |worker| {
            let rows = Rc::new(Cell::new(0usize));
            let sink = Rc::clone(&rows);
            let mut input = InputHandle::<Step, _>::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<Step, _, _>(|scope| {
                let scored = input.to_stream(scope).container::<Vec<Scored<()>>>();
                let shape = Some(GroupShape { m: M, n: N });
                let (out, _issues) = advantage_stage(
                    scored,
                    Estimator::ShareGrpo(StdConvention::Reference),
                    shape,
                );
                out.inspect(move |_| sink.set(sink.get() + 1))
                    .probe_with(&probe);
            });
            let (index, peers) = (worker.index(), worker.peers());
            for step in 0..steps {
                let lo = step as usize * SEEDS_PER_STEP;
                let hi = (lo + SEEDS_PER_STEP).min(seeds);
                for s in (lo..hi).filter(|s| s % peers == index) {
                    let seed = format!("seed-{s}");
                    for (idx, reward) in rewards(s).into_iter().enumerate() {
                        input.send(Scored {
                            seed: seed.clone(),
                            variant: idx as u32 / N,
                            sample: idx as u32 % N,
                            reward,
                            payload: (),
                        });
                    }
                }
                input.advance_to(step + 1);
                // Two steps in flight at most.
                worker.step_while(|| probe.less_than(&step));
            }
            worker.step_while(|| probe.less_than(&steps));
            rows.get()
        })
        .expect("dataflow runs");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(counts.iter().sum::<usize>(), seeds * (M * M * N) as usize);
    (seeds * (M * N) as usize) as f64 / secs
}

#[allow(clippy::print_stdout)]
fn main() {
    let seeds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let responses = seeds * (M * N) as usize;
    println!(
        "advantage + sharing, m = {M}, n = {N}, {seeds} seeds = {responses} responses (input generation included in the dataflow figures)"
    );
    let p = plain(seeds);
    println!("plain functions            : {:>12.0} responses/s", p);
    let d1 = dataflow(seeds, 1);
    println!(
        "dataflow, 1 worker         : {:>12.0} responses/s  ({:.0} per worker; engine overhead x{:.2})",
        d1,
        d1,
        p / d1
    );
    let d2 = dataflow(seeds, 2);
    println!(
        "dataflow, 2 workers        : {:>12.0} responses/s  ({:.0} per worker)",
        d2,
        d2 / 2.0
    );
}
