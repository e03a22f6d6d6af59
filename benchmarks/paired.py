"""Paired difference of two evaluations of the same test images, averaged over seeds (issue 12's levers).

``benchmarks/recipe.py`` pairs every row with the reference; this pairs any two, e.g. an evaluation-only variant with
the row whose weights it reuses. Each pair is a seed: ``--a`` and ``--b`` name evaluation folders (``per_image.csv``
with ``id``, ``dice``, ``true_class`` and ``prob_<positive>``) in the same seed order. The point estimate is the mean
over seeds of ``b - a`` (Dice mean, AUC of the positive class vs rest); the 95 % interval is a percentile bootstrap
over the images, the same resample for every seed.

    python benchmarks/paired.py --a runs/recipe/splitB/runs/zoo_nmtnet_seed{0,1,2}/eval_test \\
        --b runs/recipe/splitB/runs/zoo_nmtnet_seed{0,1,2}/eval_test_nmtnet_bn_target
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402


def paired_difference(a_dirs: list[Path], b_dirs: list[Path], positive: str = "malignant", n_bootstrap: int = 1000,
                      seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``{"dice": (point, low, high), "auc": (...)}`` of ``b - a`` averaged over the seed pairs
    (``bench.paired_bootstrap_seeds``, which pairs every recipe row with the reference).

    Raises:
        ValueError: different numbers of folders, or evaluations of different images.
    """
    if len(a_dirs) != len(b_dirs) or not a_dirs:
        raise ValueError(f"--a and --b need the same number of folders (one per seed), got {len(a_dirs)} and "
                         f"{len(b_dirs)}")
    pairs = []
    for a_dir, b_dir in zip(a_dirs, b_dirs):
        a, b = pd.read_csv(a_dir / "per_image.csv"), pd.read_csv(b_dir / "per_image.csv")
        if set(a["id"]) != set(b["id"]):
            raise ValueError(f"{a_dir} and {b_dir} evaluated different images")
        pairs.append((b, a))   # seeds covering different images: refused by paired_bootstrap_seeds
    result = bench.paired_bootstrap_seeds(pairs, positive, n_bootstrap, seed)
    return {name: (r["diff"], r["lo"], r["hi"]) for name, r in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, nargs="+", required=True, help="evaluation folders of A, one per seed")
    parser.add_argument("--b", type=Path, nargs="+", required=True, help="evaluation folders of B, the same seeds")
    parser.add_argument("--positive", default="malignant")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args()
    result = paired_difference(args.a, args.b, args.positive, args.n_bootstrap)
    print(f"B - A over {len(args.a)} seed(s), paired over the same test images (95 % bootstrap interval):")
    for name, (point, low, high) in result.items():
        print(f"  {name:<4} {point:+.3f} ({low:+.3f} to {high:+.3f})")


if __name__ == "__main__":
    main()
