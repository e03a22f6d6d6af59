"""Operating-threshold ablation (issue 12): argmax against the threshold chosen on the validation fold.

    python benchmarks/operating_point.py --runs runs/recipe/splitA/runs --section operating_point_A

For every run folder under ``--runs`` with a validation and a test evaluation (``eval_val/per_image.csv``,
``eval_test/per_image.csv``, as ``benchmarks/recipe.py`` leaves them), the positive-class threshold is chosen on the
validation images exactly as training now does (``pipeline.metrics.choose_operating_threshold``: Youden's J) and the
test images are scored with it and with the argmax, with bootstrap 95 % CIs (the same resamples for both). The class
probabilities do not depend on the decision rule, so the evaluations are read, not re-run; the rows whose training
already chose a threshold are decided the same way here. The table replaces the ``--section`` of ``--report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bench  # noqa: E402
from pipeline.metrics import choose_operating_threshold, classification_scores  # noqa: E402

METRICS = ("sensitivity", "specificity", "balanced_accuracy", "accuracy")


def _probs(frame: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
    labels = frame["true_class"].map({c: k for k, c in enumerate(classes)}).to_numpy(int)
    return probs, labels


def _cell(values: np.ndarray, point: float) -> str:
    lo, hi = np.percentile(values[np.isfinite(values)], [2.5, 97.5])
    return f"{point:.3f} ({lo:.3f}-{hi:.3f})"


def score_run(run: Path, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, str] | None:
    """The row of one run, or None when it lacks a validation or a test evaluation."""
    val, test = run / "eval_val" / "per_image.csv", run / "eval_test" / "per_image.csv"
    if not (val.is_file() and test.is_file()):
        return None
    classes = [str(c) for c in json.loads((run / "run_config.json").read_text())["classes"]]
    val_probs, val_labels = _probs(pd.read_csv(val), classes)
    threshold = choose_operating_threshold(val_probs[:, -1], val_labels == len(classes) - 1)
    probs, labels = _probs(pd.read_csv(test), classes)
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(labels), size=(n_bootstrap, len(labels)))
    row = {"run": run.name, "threshold": "argmax (one class in val)" if threshold is None else f"{threshold:.3f}"}
    for rule, t in (("argmax", None), ("val threshold", threshold)):
        point = classification_scores(probs, labels, threshold=t)
        boot = [classification_scores(probs[i], labels[i], threshold=t) for i in resamples]
        for name in METRICS:
            row[f"{rule}: {name}"] = _cell(np.array([b[name] for b in boot], dtype=np.float64), point[name])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="folder of run folders (e.g. runs/recipe/splitA/runs)")
    parser.add_argument("--report", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--section", default=None, help="section of --report to replace (default: print only)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    rows = [r for r in (score_run(p, args.n_bootstrap) for p in sorted(args.runs.iterdir()) if p.is_dir()) if r]
    if not rows:
        parser.error(f"no run under {args.runs} has both eval_val/per_image.csv and eval_test/per_image.csv")
    columns = list(rows[0])
    lines = [f"Command: `python benchmarks/operating_point.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
             f"Commit {bench.git_commit(REPO)}. Test images; 95 % CIs: bootstrap over images ({args.n_bootstrap}).",
             "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.section:
        bench.replace_section(args.report, args.section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
