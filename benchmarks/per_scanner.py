"""The test scores of evaluated runs, scanner by scanner (the datalist's ``device``, as ``bmtl prepare --source busbra``
records it): where a cross-scanner AUC is won or lost.

    python benchmarks/per_scanner.py --datalist runs/recipe_intel/data_B/datalist.json \\
        --runs runs/recipe_intel/splitB/runs/{reference,default,default_lesion_crop256}_seed0

Each run's ``eval_test/per_image.csv`` (``bmtl evaluate``, or the recipe benchmark's evaluation) is joined to the
datalist's test items by id; per scanner: images, malignant images, AUC (malignant against the rest, where both
classes occur) and mean Dice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.datalist import split_items  # noqa: E402


def by_scanner(per_image: pd.DataFrame, devices: Mapping[str, str], positive: str = "malignant") -> pd.DataFrame:
    """One row per scanner: ``scanner, images, malignant, auc, dice`` (AUC ``NaN`` where one class is missing).

    Raises:
        ValueError: an image of ``per_image`` has no scanner in ``devices``.
    """
    scanner = per_image["id"].astype(str).map(devices)
    if scanner.isna().any():
        missing = per_image.loc[scanner.isna(), "id"].astype(str).tolist()
        raise ValueError(f"{len(missing)} image(s) without a scanner in the datalist, e.g. {missing[:3]}")
    rows = []
    for name, group in per_image.assign(scanner=scanner).groupby("scanner", sort=True):
        y = group["true_class"].astype(str) == positive
        auc = float(roc_auc_score(y, group[f"prob_{positive}"])) if y.nunique() == 2 else float("nan")
        rows.append({"scanner": name, "images": len(group), "malignant": int(y.sum()), "auc": auc,
                     "dice": float(group["dice"].mean())})
    return pd.DataFrame(rows)


def test_image_scanners(datalist: Path) -> dict[str, str]:
    """Test image id -> scanner.

    Raises:
        ValueError: the datalist's test items carry no ``device`` (prepared from a source that records none).
    """
    items = split_items(datalist, 0, "test")
    if not items or any("device" not in item for item in items):
        raise ValueError(f"{datalist}: the test items have no 'device' field; prepare BUS-BRA with "
                         "`bmtl prepare --source busbra` (it records each image's scanner)")
    return {str(item["id"]): str(item["device"]) for item in items}


def markdown(runs: Mapping[str, pd.DataFrame]) -> str:
    lines = ["| run | scanner | images | malignant | AUC | Dice |", "|---|---|---:|---:|---:|---:|"]
    for run, table in runs.items():
        for row in table.itertuples():
            lines.append(f"| {run} | {row.scanner} | {row.images} | {row.malignant} | {row.auc:.3f} | {row.dice:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", type=Path, required=True,
                        help="the prepared datalist.json the runs were tested on")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders with eval_test/per_image.csv")
    args = parser.parse_args(argv)
    devices = test_image_scanners(args.datalist)
    tables = {}
    for run in args.runs:
        path = run / "eval_test" / "per_image.csv"
        if not path.is_file():
            parser.error(f"{path}: not found (evaluate the run on the test split first)")
        tables[run.name] = by_scanner(pd.read_csv(path), devices)
    print(markdown(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
