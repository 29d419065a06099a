#!/usr/bin/env python3
"""A TensorBoard event file written by TensorBoard's own writer, the golden of shareflow's.

    python3 tests/golden/tensorboard/make_events_golden.py      # pip install tensorboard

Writes tests/golden/tensorboard/events.out.tfevents.golden with tensorboard's RecordWriter and its Event /
Summary / SessionLog protos: the file-version event, a SessionLog START at step 3 (what a resumed
run writes, so that TensorBoard drops the previous attempt's later steps), and two steps of
scalars under the tags shareflow logs. Wall times are fixed so the bytes are reproducible.
src/tools/tensorboard.rs's test writes the same events and compares the bytes; then this script
reads them back with TensorBoard's EventAccumulator. Rerunning rewrites the same file.
With an argument, it reads a run directory instead (`... make_events_golden.py runs/NAME`) and
prints its scalars: the check that `tensorboard --logdir runs/` sees a shareflow run.
"""

import os
import sys

from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "events.out.tfevents.golden")  # TensorBoard reads files named *tfevents*

# (step, wall time, [(tag, value)]): the same list as the Rust test's.
STEPS = [
    (3, 1_700_000_002.25, [("reward/overall", 0.5), ("actor/pg_loss", -0.125), ("val/accuracy", 0.3125)]),
    (4, 1_700_000_003.5, [("reward/overall", 0.75), ("actor/pg_loss", 0.0), ("timing/step_s", 1.0e-3)]),
]


def main():
    with open(OUT, "wb") as f:
        w = RecordWriter(f)
        w.write(event_pb2.Event(wall_time=1_700_000_000.0, file_version="brain.Event:2").SerializeToString())
        w.write(event_pb2.Event(wall_time=1_700_000_001.0, step=3,
                                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)).SerializeToString())
        for step, wall, values in STEPS:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values])
            w.write(event_pb2.Event(wall_time=wall, step=step, summary=summary).SerializeToString())
    check(OUT)


def check(path):
    """Reads an event file or run directory as TensorBoard's server does; prints its scalars."""
    acc = EventAccumulator(path)
    acc.Reload()
    tags = acc.Tags()["tensors"]  # simple_value scalars arrive as scalar-plugin tensors
    assert tags, f"{path}: no scalars"
    for t in sorted(tags):
        print(t, [(e.step, round(float(e.tensor_proto.float_val[0]), 6)) for e in acc.Tensors(t)], file=sys.stderr)
    return tags


if __name__ == "__main__":
    if len(sys.argv) > 1:  # check a run directory: make_events_golden.py runs/share-grpo
        check(sys.argv[1])
    else:
        main()
