//! Per-step metrics through the dataflow: operators emit [`MetricRecord`]s at step `t`; the
//! collector exchanges them to worker 0, aggregates each metric when the frontier passes `t`
//! (values sorted first, so the result does not depend on arrival order) and emits one
//! [`StepMetrics`] per step, which a [`MetricsSink`] writes (e.g. JSON lines).

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

use crate::Step;

/// How values of one metric within a step are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregation {
    /// Arithmetic mean.
    Mean,
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// One observation of a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    /// Metric name, e.g. `reward/overall`.
    pub name: String,
    /// The observed value.
    pub value: f64,
    /// How observations are combined.
    pub agg: Aggregation,
}

impl MetricRecord {
    /// A metric averaged over the step.
    pub fn mean(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            agg: Aggregation::Mean,
        }
    }
    /// A metric summed over the step.
    pub fn sum(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            agg: Aggregation::Sum,
        }
    }
}

/// All metrics of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The training step.
    pub step: Step,
    /// Aggregated values by name.
    pub values: BTreeMap<String, f64>,
}

impl StepMetrics {
    /// The JSON line `{"step": t, "name": value, ...}` (non-finite values become `null`).
    pub fn to_json_line(&self) -> String {
        let mut map = serde_json::Map::new();
        map.insert("step".into(), self.step.into());
        for (k, v) in &self.values {
            map.insert(
                k.clone(),
                serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into),
            );
        }
        serde_json::Value::Object(map).to_string()
    }
}

/// Where step metrics go.
pub trait MetricsSink {
    /// Records one step.
    fn write_step(&mut self, metrics: &StepMetrics) -> std::io::Result<()>;
}

/// Writes one JSON line per step.
#[derive(Debug)]
pub struct JsonlSink<W: Write> {
    out: W,
}

impl<W: Write> JsonlSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> MetricsSink for JsonlSink<W> {
    fn write_step(&mut self, metrics: &StepMetrics) -> std::io::Result<()> {
        writeln!(self.out, "{}", metrics.to_json_line())?;
        self.out.flush()
    }
}

fn aggregate(agg: Aggregation, values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match agg {
        Aggregation::Mean => values.iter().sum::<f64>() / values.len().max(1) as f64,
        Aggregation::Sum => values.iter().sum(),
        Aggregation::Max => values.last().copied().unwrap_or(f64::NAN),
        Aggregation::Min => values.first().copied().unwrap_or(f64::NAN),
    }
}

/// Extension trait: aggregate metric records per step on worker 0.
pub trait CollectMetrics<'scope> {
    /// Emits one [`StepMetrics`] per step that carried records, on worker 0, when the frontier
    /// passes the step.
    fn collect_metrics(self) -> Stream<'scope, Step, Vec<StepMetrics>>;
}

impl<'scope> CollectMetrics<'scope> for Stream<'scope, Step, Vec<MetricRecord>> {
    fn collect_metrics(self) -> Stream<'scope, Step, Vec<StepMetrics>> {
        self.unary_frontier(
            Exchange::new(|_: &MetricRecord| 0),
            "CollectMetrics",
            |_cap, _info| {
                type Acc = BTreeMap<String, (Aggregation, Vec<f64>)>;
                let mut stash: BTreeMap<Step, (Capability<Step>, Acc)> = BTreeMap::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, batches| {
                        if let Some(cap) = cap.retain_least(port) {
                            let entry = stash
                                .entry(*cap.time())
                                .or_insert_with(|| (cap, BTreeMap::new()));
                            for b in batches {
                                for r in b.drain(..) {
                                    entry
                                        .1
                                        .entry(r.name)
                                        .or_insert_with(|| (r.agg, Vec::new()))
                                        .1
                                        .push(r.value);
                                }
                            }
                        }
                    });
                    while let Some(entry) = stash.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let step = *entry.key();
                        let (cap, acc) = entry.remove();
                        let values = acc
                            .into_iter()
                            .map(|(k, (agg, mut vs))| (k, aggregate(agg, &mut vs)))
                            .collect();
                        output.session(&cap).give(StepMetrics { step, values });
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_is_order_independent() {
        let mut a = vec![0.1, 0.2, 0.3, 1e16, -1e16];
        let mut b = vec![-1e16, 0.3, 1e16, 0.2, 0.1];
        assert_eq!(
            aggregate(Aggregation::Mean, &mut a).to_bits(),
            aggregate(Aggregation::Mean, &mut b).to_bits()
        );
        assert_eq!(aggregate(Aggregation::Max, &mut a), 1e16);
        assert_eq!(aggregate(Aggregation::Min, &mut b), -1e16);
    }

    #[test]
    fn json_line_has_step_and_values() {
        let m = StepMetrics {
            step: 3,
            values: [
                ("reward/overall".to_string(), 0.5),
                ("bad".to_string(), f64::NAN),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            m.to_json_line(),
            r#"{"bad":null,"reward/overall":0.5,"step":3}"#
        );
    }
}
