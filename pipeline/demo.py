"""``bmtl demo`` / ``make demo``: the main job end to end on synthetic data.

Today: generate a synthetic ultrasound dataset and a synthetic MRI dataset, prepare both through the same ``prepare``
path as real data, check the folds, and print a summary table.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipeline.data.datalist import format_summary
from pipeline.data.prepare import prepare, prepared_summary
from pipeline.data.splits import check_splits
from pipeline.data.synthetic import make_mr_dataset, make_us_dataset

__all__ = ["run_demo"]


def run_demo(output: str | os.PathLike, seed: int = 0, n_us: int = 60, n_mr: int = 10) -> int:
    """Run the demo into ``output``; returns the process exit code (0 when every step succeeded)."""
    out = Path(output)
    start = time.perf_counter()
    print(f"[1/3] synthetic data -> {out}")
    us_raw = make_us_dataset(out / "raw" / "us", n=n_us, seed=seed)
    mr_raw = make_mr_dataset(out / "raw" / "mr", n=n_mr, seed=seed)
    print("[2/3] prepare (the same path as real data)")
    summaries, datalists = {}, {}
    for name, source, raw in (("synthetic US", "busi", us_raw), ("synthetic MR", "nifti", mr_raw)):
        target = out / "prepared" / ("us" if source == "busi" else "mr")
        prepared, paths = prepare(source, raw, target, seed=seed)
        summaries[name] = prepared_summary(prepared)
        datalists[name] = paths["datalist"]
    print("[3/3] check splits")
    ok = True
    for name, path in datalists.items():
        report = check_splits(json.loads(Path(path).read_text()))
        ok &= report["ok"]
        print(f"  {name}: {'no group straddles folds' if report['ok'] else 'FAILED: groups straddle folds'}")
    print()
    print(format_summary(summaries))
    print()
    for name, path in datalists.items():
        print(f"{name} datalist: {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1
