"""How much the lesion's outline says about malignancy, and how much of it the predicted outline keeps (issue 12).

Shape descriptors of each mask's largest lesion component (``skimage.measure.regionprops``): log area relative to
the image, bounding-box height over width (taller-than-wide), solidity and circularity (irregular margins),
eccentricity, extent. Printed, on the test images of a prepared datalist:

- each descriptor's AUC for the malignant class (oriented as the training masks say: lower solidity is
  malignant), from the ground-truth masks and from the predicted ones;
- ``shape (truth)``: a logistic regression on all descriptors of the ground-truth masks, fitted on the training
  images (every fold): what the outline alone could give;
- ``network``: the network's malignant probability (also per test scanner, the datalist's ``device``, seed by
  seed); ``network + shape``: the network's logit stacked with the
  predicted masks' descriptors, the logistic regression fitted on the validation fold's predictions (never on the
  test set), paired against the network alone (bootstrap over the test images, averaged over the seeds).

Predictions are ``bmtl predict`` folders (``predictions.csv`` and ``masks/``) of the validation fold's and the test
set's images, one pair per seed; ``--link-images DIR`` writes those image folders (symbolic links) first:

    python benchmarks/mask_shape.py --datalist runs/recipe_intel/data_B/datalist.json --link-images runs/shape
    bmtl export --bundle bundles/breast_us_mtl --run runs/recipe_intel/splitB/runs/default_seed0 --output runs/shape/s0
    bmtl predict --bundle runs/shape/s0 --input runs/shape/val --output runs/shape/s0_val --no-overlays
    bmtl predict --bundle runs/shape/s0 --input runs/shape/test --output runs/shape/s0_test --no-overlays
    python benchmarks/mask_shape.py --datalist runs/recipe_intel/data_B/datalist.json \\
        --val runs/shape/s0_val --test runs/shape/s0_test
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from skimage.measure import label, regionprops
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
from pipeline.data.datalist import load_datalist, split_items  # noqa: E402

DESCRIPTORS = ("log_area", "height_over_width", "solidity", "circularity", "eccentricity", "extent")


def shape_descriptors(mask: np.ndarray) -> dict[str, float]:
    """``DESCRIPTORS`` of a 2D mask's largest connected component (NaN for an empty mask).

    Raises:
        ValueError: a mask that is not 2D.
    """
    if mask.ndim != 2:
        raise ValueError(f"shape_descriptors expects a 2D mask, got shape {mask.shape}")
    regions = regionprops(label(mask > 0))
    if not regions:
        return dict.fromkeys(DESCRIPTORS, float("nan"))
    r = max(regions, key=lambda region: region.area)
    height, width = r.bbox[2] - r.bbox[0], r.bbox[3] - r.bbox[1]
    return {"log_area": float(np.log(r.area / mask.size)), "height_over_width": height / width,
            "solidity": float(r.solidity),
            "circularity": float(min(1.0, 4 * np.pi * r.area / max(r.perimeter, 1.0) ** 2)),
            "eccentricity": float(r.eccentricity), "extent": float(r.extent)}


def _read_mask(path: Path) -> np.ndarray:
    try:
        return np.asarray(Image.open(path).convert("L"))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the mask ({err})") from err


def truth_frame(items: list[dict], positive: int) -> pd.DataFrame:
    """One row per datalist item (``split_items``: absolute paths): ``id``, ``y`` (malignant or not) and the
    descriptors of its ground-truth mask."""
    rows = [{"id": item["id"], "y": int(item["cls"]) == positive, "device": item.get("device", ""),
             **shape_descriptors(_read_mask(Path(item["label"])))} for item in items]
    return pd.DataFrame(rows)


def _filled(frame: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Empty masks (no lesion: NaN descriptors) given the reference frame's typical shape."""
    return frame.fillna(reference[list(DESCRIPTORS)].median())


def prediction_frame(folder: Path, truth: pd.DataFrame, typical: pd.DataFrame) -> pd.DataFrame:
    """A ``bmtl predict`` folder's images matched to ``truth`` by file stem: ``prob`` (malignant), ``logit`` and the
    descriptors of the predicted masks (an empty one given ``typical``'s median shape, as the ground truth's are).

    Raises:
        ValueError: no ``predictions.csv``, a failed prediction, or images that are not those of ``truth``.
    """
    table = folder / "predictions.csv"
    if not table.exists():
        raise ValueError(f"{folder}: no predictions.csv (a `bmtl predict` output folder is expected)")
    pred = pd.read_csv(table)
    failed = pred[pred["status"] != "ok"]
    if len(failed):
        raise ValueError(f"{table}: {len(failed)} image(s) failed, e.g. {failed['file'].iloc[0]}")
    pred["id"] = pred["file"].map(lambda f: Path(f).stem)
    if set(pred["id"]) != set(truth["id"]):
        raise ValueError(f"{table}: its images are not the {len(truth)} of the split (e.g. "
                         f"{sorted(set(pred['id']) ^ set(truth['id']))[:3]})")
    shapes = pd.DataFrame([shape_descriptors(_read_mask(folder / m)) for m in pred["mask"]])
    prob = pred["prob_malignant"].clip(1e-6, 1 - 1e-6).to_numpy()
    frame = pd.DataFrame({"id": pred["id"], "prob": prob, "logit": np.log(prob / (1 - prob))})
    frame = _filled(pd.concat([frame, shapes], axis=1), typical)
    return truth[["id", "y", "device"]].merge(frame, on="id")


def _logistic(train: pd.DataFrame, columns: list[str]):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train[columns], train["y"])


def _auc(frame: pd.DataFrame, score: np.ndarray | pd.Series) -> float:
    return float(roc_auc_score(frame["y"], score))


def _per_image(frame: pd.DataFrame, prob: np.ndarray) -> pd.DataFrame:
    """The columns ``bench.paired_bootstrap`` reads (Dice is not compared here)."""
    return pd.DataFrame({"id": frame["id"], "dice": 0.0, "prob_malignant": prob,
                         "true_class": np.where(frame["y"], "malignant", "benign")})


def shape_report(datalist: Path, val_dirs: list[Path], test_dirs: list[Path], fold: int = 0,
                 n_bootstrap: int = 1000) -> dict[str, object]:
    """The figures of the module's docstring: ``descriptors`` (per descriptor: ``truth`` and ``predicted`` test AUC,
    the latter averaged over the seeds), ``shape_truth_auc``, ``network_auc`` and ``stacked_auc`` (seed means) and
    ``stacked_vs_network`` (``diff``, ``lo``, ``hi``).

    Raises:
        ValueError: different numbers of validation and test folders, or none.
    """
    if len(val_dirs) != len(test_dirs) or not val_dirs:
        raise ValueError(f"--val and --test need one folder per seed each, got {len(val_dirs)} and {len(test_dirs)}")
    positive = load_datalist(datalist)["classes"].index("malignant")
    train_truth = truth_frame(split_items(datalist, None, "train"), positive)
    test_truth = truth_frame(split_items(datalist, fold, "test"), positive)
    val_truth = truth_frame(split_items(datalist, fold, "val"), positive)
    columns = list(DESCRIPTORS)
    train_filled, test_filled = _filled(train_truth, train_truth), _filled(test_truth, train_truth)
    shape_model = _logistic(train_filled, columns)
    report: dict[str, object] = {
        "shape_truth_auc": _auc(test_truth, shape_model.decision_function(test_filled[columns])),
    }
    # each descriptor oriented as the training masks say (solidity: lower when malignant), so that AUC > 0.5 is a cue
    sign = {name: 1.0 if _auc(train_truth, train_filled[name]) >= 0.5 else -1.0 for name in DESCRIPTORS}
    report["descriptors"] = {name: {"malignant_when": "higher" if sign[name] > 0 else "lower",
                                    "truth": _auc(test_truth, sign[name] * test_filled[name])} for name in DESCRIPTORS}
    network, stacked, pairs, by_device = [], [], [], []
    predicted: dict[str, list[float]] = {name: [] for name in DESCRIPTORS}
    for val_dir, test_dir in zip(val_dirs, test_dirs):
        val = prediction_frame(val_dir, val_truth, train_truth)
        test = prediction_frame(test_dir, test_truth, train_truth)
        stack = _logistic(val, ["logit", *columns])
        stacked_prob = stack.predict_proba(test[["logit", *columns]])[:, 1]
        network.append(_auc(test, test["prob"]))
        by_device.append({device: _auc(group, group["prob"]) for device, group in test.groupby("device")
                          if group["y"].nunique() == 2})
        stacked.append(_auc(test, stacked_prob))
        pairs.append((_per_image(test, stacked_prob), _per_image(test, test["prob"].to_numpy())))
        for name in DESCRIPTORS:
            predicted[name].append(_auc(test, sign[name] * test[name]))
    for name in DESCRIPTORS:
        report["descriptors"][name]["predicted"] = float(np.mean(predicted[name]))
    difference = bench.paired_bootstrap_seeds(pairs, n_resamples=n_bootstrap)["auc"]
    report.update(network_auc=float(np.mean(network)), stacked_auc=float(np.mean(stacked)),
                  network_by_device={device: [seed[device] for seed in by_device] for device in by_device[0]},
                  stacked_vs_network={k: difference[k] for k in ("diff", "lo", "hi")}, seeds=len(val_dirs))
    return report


def link_images(datalist: Path, out: Path, fold: int = 0) -> None:
    """``out/val`` and ``out/test``: symbolic links to the validation fold's and the test set's images."""
    for name in ("val", "test"):
        items = split_items(datalist, fold, name)
        (out / name).mkdir(parents=True, exist_ok=True)
        for item in items:
            link = out / name / f"{item['id']}{Path(item['image']).suffix}"
            if not link.exists():
                os.symlink(Path(item["image"]).resolve(), link)
        print(f"{out / name}: {len(items)} images")


def markdown(report: dict[str, object]) -> str:
    lines = [f"Malignant AUC on the test images ({report['seeds']} seed(s); predicted: mean over the seeds)", "",
             "| descriptor | malignant when | ground-truth mask | predicted mask |", "|---|---|---:|---:|"]
    lines += [f"| {name} | {v['malignant_when']} | {v['truth']:.3f} | {v['predicted']:.3f} |"
              for name, v in report["descriptors"].items()]
    d = report["stacked_vs_network"]
    lines += ["", f"shape (truth), logistic regression fitted on the training masks: {report['shape_truth_auc']:.3f}",
              f"network: {report['network_auc']:.3f}"]
    lines += [f"  {device or 'no device column'} ({len(aucs)} seed(s)): " + ", ".join(f"{a:.3f}" for a in aucs)
              for device, aucs in report["network_by_device"].items()]
    lines.append(f"network + shape of the predicted mask (fitted on the validation fold): {report['stacked_auc']:.3f}, "
                 f"paired difference {d['diff']:+.3f} ({d['lo']:+.3f} to {d['hi']:+.3f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", type=Path, required=True, help="a prepared datalist with a test section")
    parser.add_argument("--fold", type=int, default=0, help="the validation fold the runs selected on")
    parser.add_argument("--val", type=Path, nargs="*", default=[], help="`bmtl predict` folders of the validation "
                        "fold's images, one per seed")
    parser.add_argument("--test", type=Path, nargs="*", default=[], help="the same of the test images, same seeds")
    parser.add_argument("--link-images", type=Path, help="write the image folders to predict (DIR/val, DIR/test)")
    args = parser.parse_args(argv)
    if args.link_images:
        link_images(args.datalist, args.link_images, args.fold)
        return 0
    print(markdown(shape_report(args.datalist, args.val, args.test, args.fold)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
