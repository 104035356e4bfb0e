"""Hydra callback: at the end of a multirun, print the summary table and write the report.

Runs even when some points failed: jobs record failures in their result.json instead of
raising, so Hydra always reaches on_multirun_end.
"""
from __future__ import annotations

import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from bench import report
        from bench.results import load

        sweep_dir = config.hydra.sweep.dir
        df = load([sweep_dir], on_skip=lambda msg: print(f"skipped {msg}"))
        print()
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
