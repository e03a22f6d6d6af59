"""Deployment commands: ``export``, ``verify``, ``predict``, ``log-model``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["add_deployment_commands"]


def _cmd_export(args: argparse.Namespace) -> int:
    from pipeline.bundle_folder import check_export_paths

    try:
        check_export_paths(args.bundle, args.run, args.output, args.checkpoint, args.overwrite)   # before torch
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.log_model or args.register_model:   # told before the export, not after it
        from pipeline.mlflow_model import training_run_tracking

        training_run_tracking(args.run)
    from pipeline.deploy import export_bundle
    from pipeline.export import ExportParityError

    try:
        report = export_bundle(args.bundle, args.run, args.output, formats=args.format, checkpoint=args.checkpoint,
                               atol=args.atol, overwrite=args.overwrite)
    except ExportParityError as e:
        print(f"export FAILED (nothing written): {e}", file=sys.stderr)
        return EXIT_FAILED
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"exported {report['network_name']} to {args.output}")
    for fmt, per_input in report["parity"].items():
        worst = {h: max(d[h] for d in per_input.values()) for h in ("seg", "cls")}
        print(f"  {fmt:<11} parity with eager (max abs diff over {len(per_input)} inputs): seg {worst['seg']:.2e}, "
              f"cls {worst['cls']:.2e} <= {report['atol']:g}")
    for name, rel in report["files"].items():
        print(f"  {name:<11} {rel}")
    if args.log_model or args.register_model:
        from pipeline.mlflow_model import log_into_training_run, serve_command

        uri, tracking = log_into_training_run(args.run, args.output, register_name=args.register_model)
        print(f"MLflow model in the training run: {uri}"
              + (f" (registered as models:/{args.register_model}/latest)" if args.register_model else ""))
        print(f"serve: MLFLOW_TRACKING_URI={tracking} {serve_command(uri)}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.verify import format_checks, verify_bundle

    rows = verify_bundle(args.bundle, runtimes=args.runtime, device=args.device)
    print(format_checks(rows))
    return EXIT_OK if all(r.ok for r in rows) else EXIT_FAILED


def _probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def _cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.bundle_folder import exported_bundle_root, resolve_runtime
    from pipeline.prediction_journal import check_output_folder

    # usage errors answered before torch and MONAI are imported (the model is not loaded for them)
    for bundle in args.bundle:
        resolve_runtime(exported_bundle_root(bundle) / "models", args.runtime)
    if not args.input.exists():
        raise FileNotFoundError(f"input {args.input} not found")
    check_output_folder(args.output, args.input, overwrite=args.overwrite, resume=args.resume)
    from pipeline.inference import predict
    from pipeline.inference.outputs import text

    result = predict(
        args.bundle[0] if len(args.bundle) == 1 else args.bundle, args.input, args.output, runtime=args.runtime,
        device=args.device, batch_size=args.batch_size, tta=args.tta, frame=args.frame,
        threshold=args.threshold, refine=True if args.refine else (False if args.no_refine else None),
        explain=args.explain or None,
        overlays=False if args.no_overlays else None, native_resolution=args.native_resolution or None,
        progress=not args.no_progress, overwrite=args.overwrite, resume=args.resume,
        max_pixels=None if args.max_pixels == 0 else args.max_pixels,
    )
    skipped = f", {result.n_skipped} skipped" if result.n_skipped else ""
    models = f"{len(args.bundle)} bundles averaged, " if len(args.bundle) > 1 else ""
    print(f"{result.n_ok} input(s) predicted, {result.n_failed} failed{skipped} ({models}{result.runtime} on "
          f"{result.device})")
    root = args.input if args.input.is_dir() else args.input.parent   # the table's paths are relative to --input
    for row in result.rows:
        if row["status"] != "ok":
            print(f"  {row['status']}: {text(root / row['file'])}: {row['error']}")
    print(f"predictions: {result.csv_path}")
    return result.exit_code


def _cmd_log_model(args: argparse.Namespace) -> int:
    import shutil

    from pipeline.bundle_folder import exported_bundle_root

    exported_bundle_root(args.bundle)   # a usage error answered before MLflow, torch and MONAI are imported
    from mlflow.exceptions import MlflowException

    from pipeline.mlflow_model import log_bundle_model, serve_command

    try:
        uri = log_bundle_model(args.bundle, tracking_uri=args.tracking_uri, run_id=args.run_id,
                               register_name=args.register_model)
    except MlflowException as e:  # unknown run id, unreachable server, ...
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_FAILED
    print(f"model: {uri}")
    if args.register_model:
        print(f"registered: models:/{args.register_model}/latest")
    print(f"serve: MLFLOW_TRACKING_URI={args.tracking_uri} {serve_command(uri)}")
    if shutil.which("uvicorn") is None:  # mlflow starts the HTTP server by name
        print(f"       with {Path(sys.executable).parent} on PATH (mlflow runs `uvicorn` from there)")
    return EXIT_OK


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """``bmtl predict`` and its options."""
    p = sub.add_parser(
        "predict",
        help="segment and classify new images with an exported bundle",
        description="Predict every image of --input (a file or a folder, recursive: PNG/JPEG/BMP/TIFF, DICOM files "
        "and series folders, 2D/3D NIfTI, 3D NRRD and MetaImage) with an exported bundle. Writes masks in each "
        "input's geometry (masks/*_mask.png 0/255 at the original size and orientation; masks/*_mask.nii.gz with the "
        "input's affine and header; masks/*_mask.nrrd in an NRRD input's space; masks/*_mask.mha in a MetaImage "
        "input's), overlays/*_overlay.png, optional Grad-CAM "
        "heatmaps/*_gradcam.png, and predictions.csv (one row per input, its path relative to --input and its "
        "files' relative to --output; a bad input gets an error row and the others go on).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl predict --bundle exported/breast_us_mtl --input scans/ --output predictions/ --refine "
        "--explain\n"
        "exit codes: 0 every input predicted (files named *_mask.* in a folder are skipped and listed, not failures), "
        "3 some inputs failed (error rows in predictions.csv), 1 no input predicted, 2 usage error (bad bundle, "
        "options, input)",
    )
    p.add_argument("--bundle", required=True, type=Path, action="append",
                   help="exported bundle folder (made by `bmtl export`); repeat it (--bundle fold0 --bundle fold1 ...) "
                   "to average several models' probabilities (a fold ensemble; same classes and preprocessing)")
    p.add_argument("--input", required=True, type=Path, help="an image file, a DICOM series folder, or a folder")
    p.add_argument("--output", required=True, type=Path, help="output folder")
    p.add_argument("--runtime", choices=["auto", "torch", "torchscript", "onnx"], default="auto",
                   help="model to run (default auto: model.ts, else model.onnx, else model.pt)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="images or slices per forward pass (default 8)")
    p.add_argument("--threshold", type=_probability, default=None,
                   help="lesion probability threshold, between 0 and 1 (default: the bundle's)")
    refine = p.add_mutually_exclusive_group()
    refine.add_argument("--refine", action="store_true",
                        help="paper 004 prediction refinement: the heads agree on 'normal' (default: on when the "
                        "model has a normal class)")
    refine.add_argument("--no-refine", action="store_true", help="no refinement, even with a normal class")
    p.add_argument("--frame", type=int, default=None, metavar="N",
                   help="of a multi-frame DICOM file (an ultrasound cine loop), predict only frame N (0-based; "
                   "default: every frame, one row each)")
    p.add_argument("--tta", choices=["flip", "none"], default=None,
                   help="test-time augmentation: flip averages in the left-right flipped image (default: the "
                   "bundle's flip_tta, as evaluation did)")
    p.add_argument("--explain", action="store_true", help="Grad-CAM heatmaps of the classification head")
    p.add_argument("--native-resolution", action="store_true",
                   help="sliding-window segmentation at the image's own resolution instead of resizing it to the "
                   "training size (for images at the training images' pixel scale)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    # pipeline.inference.predictor.MAX_PIXELS, not imported: usage errors are answered before torch is imported
    p.add_argument("--max-pixels", type=int, default=25_000_000, metavar="N",
                   help="an input whose images (a volume's slices) have more than N pixels gets an error row "
                   "instead of being predicted: memory grows with the image's size, about 2.7 GB at the default "
                   "25000000 (5000 x 5000), 6.1 GB at 8000 x 8000 (0: no limit)")
    rerun = p.add_mutually_exclusive_group()
    rerun.add_argument("--overwrite", action="store_true",
                       help="replace the predictions of an earlier run in --output (refused otherwise)")
    rerun.add_argument("--resume", action="store_true",
                       help="finish an interrupted run in --output: inputs it predicted are not predicted again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)


def add_deployment_commands(sub: argparse._SubParsersAction) -> None:
    """Register the sub-commands of this module on ``sub``."""
    p = sub.add_parser(
        "export",
        help="export a trained run as a self-contained bundle (TorchScript + ONNX, parity-checked)",
        description="Copy the bundle's configs, pin the run (configs/deploy.yaml), fill metadata.json, and export the "
        "network through the (seg, cls) wrapper to TorchScript and/or ONNX (one file). Each export must match the "
        "eager network within --atol on random and synthetic inputs, else nothing is written (exit 1). "
        "Layout: docs/README.md of the bundle.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl export --bundle bundles/breast_us_mtl --run runs/segresnet_effnet_fold0 "
        "--output exported/breast_us_mtl --format torchscript onnx --log-model\n"
        "exit codes: 0 exported, 1 parity check failed, 2 usage error (missing run, output not empty, ...)",
    )
    p.add_argument("--bundle", required=True, type=Path, help="source bundle folder (bundles/breast_us_mtl, ...)")
    p.add_argument("--run", required=True, type=Path, help="training run folder (run_config.json, models/model.pt)")
    p.add_argument("--output", required=True, type=Path, help="exported bundle folder to create")
    p.add_argument("--format", nargs="+", choices=["torchscript", "onnx"], default=["torchscript", "onnx"],
                   help="model formats besides models/model.pt (default: both)")
    p.add_argument("--checkpoint", default="model.pt", help="checkpoint in RUN/models (default model.pt, the best)")
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance on both heads' logits (default 1e-4)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--log-model", action="store_true",
                   help="also log the exported model as an MLflow pyfunc model into the run's own MLflow run "
                   "(runs:/<training run>/model, servable with `mlflow models serve`)")
    p.add_argument("--register-model", default=None, metavar="NAME",
                   help="log it (implies --log-model) and register it in the model registry under NAME")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "verify",
        help="check a bundle's metadata (shipped schema) and both output heads of its network and exported models",
        description="Validate configs/metadata.json against the schema shipped in the package (no download), build "
        "the network from the configs, and run an input of the metadata's shape through the eager network and every "
        "exported model: the seg and cls heads must have the metadata's shapes and dtypes. A dict-aware "
        "replacement for MONAI's verify_net_in_out (which assumes one output).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl verify --bundle exported/breast_us_mtl\n"
        "exit codes: 0 every check passed, 1 a check failed, 2 usage error",
    )
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (exported, or a source bundle)")
    p.add_argument("--runtime", nargs="+", choices=["torch", "torchscript", "onnx"], default=None,
                   help="check only these (default: every model present)")
    p.add_argument("--device", default="cpu", help="device to run on (default cpu)")
    p.set_defaults(func=_cmd_verify)

    _add_predict_parser(sub)

    p = sub.add_parser(
        "log-model",
        help="log an exported bundle as an MLflow pyfunc model (image in; mask and class probabilities out)",
        description="Log an exported bundle as an MLflow model: a pyfunc taking a column 'image' of image files "
        "(base64 in JSON) and returning prob_<class>, predicted_class, mask_png (base64 PNG, 0/255, the input's size), "
        "height and width, with its signature, an input example, the pipeline package as code and the project's "
        "requirements. `mlflow models serve` then serves it with no other code.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl log-model --bundle exported/breast_us_mtl --tracking-uri sqlite:///runs/mlruns.db "
        "--register-model breast_us_mtl\n"
        "         mlflow models serve -m runs:/<run_id>/model --env-manager local -p 5001",
    )
    p.add_argument("--bundle", required=True, type=Path, help="exported bundle folder (made by `bmtl export`)")
    p.add_argument("--tracking-uri", required=True, help="MLflow tracking store (sqlite:///mlruns.db, http://...)")
    p.add_argument("--run-id", default=None, help="log into this run (e.g. the training run; default: a new run)")
    p.add_argument("--register-model", default=None, metavar="NAME", help="also register the model under NAME")
    p.set_defaults(func=_cmd_log_model)
