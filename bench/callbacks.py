"""Hydra callback: at the end of a multirun, print the summary table and write the report.

Runs even when some points failed: jobs record failures in their result.json instead of
raising, so Hydra always reaches on_multirun_end.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from bench import report
        from bench.results import load
        from bench.run import SKIPPED_NAME

        sweep_dir = config.hydra.sweep.dir
        # a resumed sweep's report shows the ok results it skipped beside the new ones
        reused: list[str] = []
        for marker in sorted(glob.glob(os.path.join(sweep_dir, "**", SKIPPED_NAME), recursive=True)):
            try:
                with open(marker) as f:
                    path = json.load(f)["result"]
            except (OSError, ValueError, KeyError, TypeError):
                print(f"skipped {marker}: unreadable")
                continue
            if path not in reused:  # two points may share one old result (keys outside the hash)
                reused.append(path)
        df = load([sweep_dir, *reused], on_skip=lambda msg: print(f"skipped {msg}"))
        print()
        if reused:
            print(f"resume: {len(reused)} point(s) skipped, their ok results already exist (reused in the report)")
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
