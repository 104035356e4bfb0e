"""Hydra callback: at the end of a multirun, print the summary table, write the report, and
set the sweep's exit code from its points' statuses.

Runs even when some points failed: jobs record failures in their result.json instead of
raising, so Hydra always reaches on_multirun_end. It runs in the process that started the
sweep, also when the points ran elsewhere (submitit), so the exit code covers every point.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    exit_code = 0  # the sweep's, from its points' statuses (bench.results.sweep_exit_code): bench.run exits with it

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from bench import report
        from bench.protocol import TOTAL_ENV
        from bench.results import SKIPPED_NAME, load, sweep_exit_code

        sweep_dir = config.hydra.sweep.dir
        # a resumed sweep's report shows the ok results it skipped beside the new ones
        reused: list[str] = []
        for marker in sorted(glob.glob(os.path.join(sweep_dir, "**", SKIPPED_NAME), recursive=True)):
            try:
                with open(marker) as f:
                    m = json.load(f)
                paths = m["results"] if "results" in m else [m["result"]]
            except (OSError, ValueError, KeyError, TypeError):
                print(f"skipped {marker}: unreadable")
                continue
            reused += [p for p in paths if p not in reused]  # points may share old results (keys outside the hash)
        new = load([sweep_dir], on_skip=lambda msg: print(f"skipped {msg}"))
        SweepReport.exit_code = sweep_exit_code(new["status"] if not new.empty else [])
        expected, left = os.environ.get(TOTAL_ENV), _points_recorded(sweep_dir)
        if expected and expected.isdigit() and left < int(expected):  # a job killed before it wrote anything
            print(f"{int(expected) - left} of {expected} point(s) left no result (killed, or their files are "
                  "unreadable): the sweep exits 1")
            SweepReport.exit_code = 1
        df = pd.concat([new, load(reused, on_skip=lambda msg: print(f"skipped {msg}"))], ignore_index=True) \
            if reused else new
        print()
        if reused:
            print(f"resume: {len(reused)} ok run(s) reused, their results already exist (in the report)")
        print(report.summary_table(df))
        if df.empty:
            return
        name = os.path.basename(os.path.normpath(sweep_dir))
        out = os.path.join(config.get("report_dir", "reports"), f"{name}.pdf")
        try:
            report.write_report(df, out, title=f"scalebench sweep {name}")
            print(f"\nreport: {out}")
        except Exception as e:  # a report problem must not hide the results
            print(f"\nreport could not be written: {type(e).__name__}: {e}")


def _points_recorded(sweep_dir: str) -> int:
    """Point folders of a sweep that hold a record: a result, a reuse pointer or a node note."""
    recorded = set()
    for root, dirs, names in os.walk(sweep_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(n.startswith(("result", "skipped", "node.")) and n.endswith(".json") for n in names):
            recorded.add(root)
    return len(recorded)
