//! A user-defined graph from the public operators: GRPO-style normalisation of each variant alone
//! (local only, no global term, no sharing), with the rows printed per step.
//!
//!     cargo run --example custom_advantages

use shareflow::operators::{NormalizeLocal, Scored};
use shareflow::runtime::timely::dataflow::operators::{Inspect, Probe};
use shareflow::runtime::timely::dataflow::{InputHandle, ProbeHandle};
use shareflow::runtime::{ClusterConfig, DetRng, Step, StepDriver};

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    ClusterConfig::threads(2).execute(|worker| {
        let mut input = InputHandle::<Step, _>::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<Step, _, _>(|scope| {
            let scored = input.to_stream(scope).container::<Vec<Scored<()>>>();
            let (local, issues) = scored.normalize_local(None);
            local
                .inspect(|l| {
                    println!(
                        "{} variant {} sample {}: reward {:.1} -> local advantage {:+.3}",
                        l.scored.seed,
                        l.scored.variant,
                        l.scored.sample,
                        l.scored.reward,
                        l.local.unwrap_or(f64::NAN)
                    );
                })
                .probe_with(&probe);
            issues
                .inspect(|i| println!("issue: {i}"))
                .probe_with(&probe);
        });
        // Worker 0 feeds two steps of 3 seeds, 2 variants, 4 samples each; rewards are derived
        // from (run seed, step, seed id, index) so the run is the same with any worker count.
        let feed = worker.index() == 0;
        StepDriver::new(2).run(worker, &mut input, &probe, 2, |step, input| {
            if !feed {
                return;
            }
            for s in 0..3 {
                let seed = format!("q{step}-{s}");
                for idx in 0..8u32 {
                    let mut rng = DetRng::derive(42, step, seed.as_str(), u64::from(idx));
                    input.send(Scored {
                        seed: seed.clone(),
                        variant: idx / 4,
                        sample: idx % 4,
                        reward: if rng.next_f64() < 0.5 { 1.0 } else { 0.0 },
                        payload: (),
                    });
                }
            }
        });
    })?;
    Ok(())
}
