//! The README's custom graph (`examples/custom_graph.rs`) compiles and trains.

#[path = "../examples/custom_graph.rs"]
mod custom_graph;

#[test]
fn the_custom_graph_example_trains_and_its_filter_drops_tied_questions() -> anyhow::Result<()> {
    let (outcome, dropped) = custom_graph::run(3)?;
    assert_eq!(outcome.records.len(), 3);
    // Every question is either trained on (its group reached the update) or dropped.
    let trained: usize = outcome.records.iter().map(|r| r.rollout.seeds).sum();
    assert_eq!(
        trained + dropped,
        3 * 4,
        "trained {trained}, dropped {dropped}"
    );
    for r in &outcome.records {
        // GRPO: one row per response of a kept question, 12 responses each.
        assert_eq!(r.rollout.responses, r.rollout.seeds * 12);
        assert_eq!(
            r.rollout.tied_fraction, 0.0,
            "a tied group reached the update"
        );
        assert_eq!(r.policy_version, r.step + 1);
    }
    Ok(())
}
