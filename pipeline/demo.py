"""``bmtl demo`` / ``make demo``: the main job end to end on synthetic data.

Generate a synthetic ultrasound dataset and a synthetic MRI dataset, prepare both through the same ``prepare`` path
as real data, check the folds, print a summary table; then train the ultrasound bundle's default network on fold 0
with ``python -m monai.bundle run training``, evaluate it with ``run evaluating``, export it (TorchScript + ONNX,
parity-checked) and predict a folder of new synthetic images with the exported bundle; print the metric table and
where the MLflow store, the plots and the predictions are.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from pipeline.data.datalist import format_summary
from pipeline.data.io import write_png
from pipeline.data.prepare import prepare, prepared_summary
from pipeline.data.splits import check_splits
from pipeline.data.synthetic import make_mr_dataset, make_us_dataset
from pipeline.data.synthetic_us import make_us_case
from pipeline.deploy import export_bundle
from pipeline.inference import predict
from pipeline.mlflow_model import log_into_training_run, serve_command
from pipeline.handlers.summary import format_metrics
from pipeline.workflows import bundles_dir, run_bundle


__all__ = ["run_demo"]


def run_demo(
    output: str | os.PathLike, seed: int = 0, n_us: int = 90, n_mr: int = 10, epochs: int = 16,
    preset: str | None = None,
) -> int:
    """Run the demo into ``output``; returns the process exit code (0 when every step succeeded)."""
    out = Path(output).resolve()
    start = time.perf_counter()
    print(f"[1/6] synthetic data -> {out}")
    us_raw = make_us_dataset(out / "raw" / "us", n=n_us, seed=seed)
    mr_raw = make_mr_dataset(out / "raw" / "mr", n=n_mr, seed=seed)
    print("[2/6] prepare (the same path as real data)")
    summaries, datalists = {}, {}
    for name, source, raw in (("synthetic US", "busi", us_raw), ("synthetic MR", "nifti", mr_raw)):
        target = out / "prepared" / ("us" if source == "busi" else "mr")
        prepared, paths = prepare(source, raw, target, seed=seed)
        summaries[name] = prepared_summary(prepared)
        datalists[name] = paths["datalist"]
    print("[3/6] check splits")
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
    if not ok:
        return 1

    run_dir = out / "runs" / "us_fold0"
    us_bundle = bundles_dir() / "breast_us_mtl"
    overrides = {"datalist": str(datalists["synthetic US"]), "fold": 0, "epochs": epochs, "output_dir": str(run_dir),
                 "seed": seed, "run_name": "demo_us_fold0"}
    if preset:
        overrides["preset"] = preset
    print(f"\n[4/6] train the ultrasound bundle ({epochs} epochs, fold 0): python -m monai.bundle run training ...")
    seconds = run_bundle(us_bundle, "training", overrides, log_file=run_dir / "train.log", quiet=False)
    print(f"trained in {seconds:.0f} s")
    print("\n[5/6] evaluate the best checkpoint on fold 0: python -m monai.bundle run evaluating ...")
    run_bundle(us_bundle, "evaluating", overrides, log_file=run_dir / "evaluate.log", quiet=True)
    summary = json.loads((run_dir / "eval_val" / "summary.json").read_text())
    print()
    print(format_metrics(summary))
    print(f"\nHTML report   : {run_dir / 'eval_val' / 'report.html'} (metrics, curves, plots, worst cases)")
    print(f"per-image CSV : {run_dir / 'eval_val' / 'per_image.csv'}")
    print(f"plots         : {run_dir / 'eval_val'} (roc, confusion_matrix, calibration, overlays, gradcam_worst), "
          f"{run_dir / 'learning_curves.png'}")
    print(f"checkpoints   : {run_dir / 'models'} (logs: train.log, evaluate.log)")
    print("\n[6/6] export (TorchScript + ONNX, parity-checked) and predict new images with the exported bundle")
    exported = out / "exported" / "breast_us_mtl"
    export_bundle(us_bundle, run_dir, exported, overwrite=True)
    new_images = out / "new_images"
    new_images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    for i, cls in enumerate(("benign", "malignant", "normal", "malignant")):
        image, _ = make_us_case(rng, cls, size=(160, 224))  # another size than training: mapped back to it
        write_png(new_images / f"scan_{i}.png", image)
    result = predict(exported, new_images, out / "predictions", progress=False, overwrite=True)  # the demo's own folder
    # the exported model as an MLflow pyfunc model in the training run: `mlflow models serve` serves it as it is
    model_uri, tracking = log_into_training_run(run_dir, exported)
    print(f"predictions   : {result.csv_path} ({result.n_ok} images, masks and overlays beside it)")
    print(f"\nexported bundle: {exported}")
    print(f"model card     : {exported / 'docs' / 'model_card.md'}")
    print(f"HTML report    : {run_dir / 'eval_val' / 'report.html'}")
    print(f"MLflow model   : {model_uri} (store {tracking})")
    print(f"                 serve it: MLFLOW_TRACKING_URI={tracking} {serve_command(model_uri)}")
    print(f"                 browse runs: mlflow ui --backend-store-uri {tracking}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
