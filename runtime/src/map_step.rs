//! `map_with_step`: a map that also sees the record's step (timely's `map` does not).
//!
//! Input: `D` at step `t`. Output: `f(d, t)` at step `t`. Pipeline (no exchange); emits at once.

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use crate::Step;

/// Extension trait: map records together with their step.
pub trait MapWithStep<'scope, D> {
    /// Maps every record `d` of step `t` to `f(d, t)`.
    fn map_with_step<D2: Clone + 'static, F: FnMut(D, Step) -> D2 + 'static>(
        self,
        name: &str,
        f: F,
    ) -> Stream<'scope, Step, Vec<D2>>;
}

impl<'scope, D: 'static> MapWithStep<'scope, D> for Stream<'scope, Step, Vec<D>> {
    fn map_with_step<D2: Clone + 'static, F: FnMut(D, Step) -> D2 + 'static>(
        self,
        name: &str,
        mut f: F,
    ) -> Stream<'scope, Step, Vec<D2>> {
        self.unary(Pipeline, name, move |_cap, _info| {
            move |input, output| {
                input.for_each_stamp(|cap, batches| {
                    let t = cap.least().copied().unwrap_or_default();
                    let mut session = output.session(&cap);
                    for b in batches {
                        session.give_iterator(b.drain(..).map(|d| f(d, t)));
                    }
                });
            }
        })
    }
}
