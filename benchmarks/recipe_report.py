"""The recipe benchmark's Markdown section (``benchmarks/recipe.py``): one table row per row and seed, and, over
several seeds, each row's mean ± standard deviation with its paired difference against the reference averaged over
the seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

import bench
from recipe_rows import ROWS

REPO = Path(__file__).resolve().parents[1]
EXTRA = [("ECE", "ece_fmt"), ("vs ref Dice", "vs_ref_dice"), ("vs ref AUC", "vs_ref_auc"), ("epochs", "epochs"),
         ("idle train img/s", "idle_images_per_second"), ("infer ms/img", "inference_ms"),
         ("val Dice", "val_dice"), ("val AUC", "val_auc")]
SEED_METRICS = ["dice", "jaccard", "auc", "balanced_accuracy", "sensitivity", "specificity", "ece"]


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record, each metric by its point estimate (the CSV's columns, and what the seeds table averages)."""
    return pd.DataFrame([{k: (v["mean"] if isinstance(v, dict) else v) for k, v in r.items()} for r in records])


def report(records: list[dict[str, Any]], *, title: str, command: str, started: str, budget_minutes: float,
           budget_mode: str, rows: list[str], seeds: list[int], per_image: Callable[[str, int], Path]) -> str:
    """The section: ``records`` are ``RecipeBenchmark.run``'s (one per row and seed, in ``rows`` order);
    ``per_image(row, seed)`` is that run's test ``per_image.csv`` (for the seeds table)."""
    table_rows = [{**r, "network": f"{r['network']} (seed {r['seed']})",
                   "ece_fmt": "" if r.get("ece") is None else f"{r['ece']:.3f}"} for r in records]
    lines = [
        f"### Recipe benchmark, {title}",
        "",
        f"Command: `{command}`  ",
        f"Commit {bench.git_commit(REPO)}, {started}, {bench.hardware_summary()}.  ",
        f"Budget {budget_minutes} min of training per row ({budget_mode} mode"
        + (": epochs from each row's idle 2-epoch calibration, validation included" if budget_mode == "epochs"
           else "") + "). Test images scored at their own size; CIs: bootstrap 95 %; 'vs ref': paired bootstrap "
        "difference against the reference of the same seed. 'val' columns: the validation fold (what the recipe "
        "choices may be selected on).",
        "",
        bench.markdown_results(table_rows, bench.REPORTED_METRICS, EXTRA),
        "",
        "Rows: " + "; ".join(f"`{name}`: {ROWS[name].note}" for name in rows) + ".",
    ]
    if len(seeds) > 1:
        lines += ["", seed_summary(records, rows, seeds, per_image)]
    return "\n".join(lines)


def seed_summary(records: list[dict[str, Any]], rows: list[str], seeds: list[int],
                 per_image: Callable[[str, int], Path]) -> str:
    """Each row over the seeds: mean and standard deviation of the test metrics, and the paired difference against
    the reference averaged over the seeds (``bench.paired_bootstrap_seeds``: one draw of the test images per
    resample, used for every seed)."""
    frame = records_frame(records)
    header = ["row", "seeds", *SEED_METRICS, "vs ref Dice (seed mean, 95 % CI)", "vs ref AUC (seed mean, 95 % CI)",
              "epochs"]
    lines = [f"Over seeds {', '.join(map(str, seeds))}: mean ± standard deviation over the seeds; the "
             "differences are paired on the same test images and averaged over the seeds.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in rows:
        row_runs = frame[frame["network"] == name]
        cells = [name, str(len(row_runs))]
        for metric in SEED_METRICS:
            values = row_runs[metric].astype(float)
            spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.3f}{spread}")
        if name != "reference":
            diff = bench.paired_bootstrap_seeds([(per_image(name, seed), per_image("reference", seed))
                                                 for seed in row_runs["seed"]])
            cells += [f"{diff[k]['diff']:+.3f} ({diff[k]['lo']:+.3f} to {diff[k]['hi']:+.3f})" for k in ("dice", "auc")]
        else:
            cells += ["", ""]
        cells.append("/".join(str(int(e)) for e in row_runs["epochs"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
