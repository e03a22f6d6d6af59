"""``bmtl``: thin console entry points over the ``pipeline`` package.

Each sub-command parses its arguments and calls one library function; the work lives in the package so that it is
usable (and tested) without the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _cmd_prepare(args: argparse.Namespace) -> int:
    from pipeline.data.datalist import format_summary
    from pipeline.data.prepare import prepare, prepared_summary

    options = {}
    for name in ("labels", "axis", "negative_slices", "classes_csv"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    test_devices = [d for d in args.test_devices.split(",") if d.strip()] if args.test_devices else None
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    prepared, paths = prepare(
        args.source, args.input, args.output, strict=args.strict, n_folds=args.folds, seed=args.seed,
        test_fold=args.test_fold, test_devices=test_devices, classes=classes, **options
    )
    print(format_summary({prepared.name: prepared_summary(prepared)}))
    left_out = prepared.extra.get("classes_left_out") or {}
    if left_out:
        print("left out by --classes: " + ", ".join(f"{n} {c}" for c, n in left_out.items()))
    print(f"\ndatalist: {paths['datalist']}\ndataset:  {paths['dataset']}\nskipped:  {paths['skipped']}")
    if len(prepared.skipped):
        print(f"{len(prepared.skipped)} input(s) skipped; the reasons are in {paths['skipped']}:")
        for row in prepared.skipped.rows[:10]:
            print(f"  {row['path']}: {row['problem']}")
        if len(prepared.skipped) > 10:
            print(f"  ... and {len(prepared.skipped) - 10} more")
    return EXIT_OK


def _cmd_check_splits(args: argparse.Namespace) -> int:
    from pipeline.data.datalist import load_datalist
    from pipeline.data.splits import check_splits

    datalist = load_datalist(args.datalist)
    report = check_splits(datalist)
    for fold, counts in report["per_fold"].items():
        print(f"fold {fold}: " + ", ".join(f"{c}={n}" for c, n in counts.items()))
    groups = {str(item["group"]) for item in datalist["training"]}
    if report["ok"]:
        print(f"OK: {len(groups)} groups, none straddles folds; no test group appears in training")
        return EXIT_OK
    for group, folds in list(report["straddling_groups"].items())[:20]:
        print(f"group {group} straddles folds {folds}")
    for group in report["test_groups_in_training"][:20]:
        print(f"group {group} is in both test and training")
    print(f"FAILED: {len(report['straddling_groups'])} straddling group(s), "
          f"{len(report['test_groups_in_training'])} test group(s) leaked into training")
    return EXIT_FAILED


def _cmd_dedup(args: argparse.Namespace) -> int:
    from pipeline.data.dedup import run_dedup

    report = run_dedup(args.input, args.output, threshold=args.threshold, curate=args.curate)
    print(json.dumps({k: str(v) for k, v in report.items()}, indent=2))
    return EXIT_OK


def _cmd_synth(args: argparse.Namespace) -> int:
    from pipeline.data import synthetic

    make = synthetic.make_us_dataset if args.modality == "us" else synthetic.make_mr_dataset
    out = make(args.out, n=args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic {args.modality.upper()} cases to {out}")
    return EXIT_OK


def _cmd_networks(args: argparse.Namespace) -> int:
    from pipeline.networks.table import network_table

    print(network_table(size=args.size, repeats=args.repeats))
    return EXIT_OK


def _cmd_cv(args: argparse.Namespace) -> int:
    from pipeline.workflows import run_cv

    overrides = dict(_parse_overrides(args.override))
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    run_cv(args.bundle, args.datalist, args.output, folds=args.folds, preset=args.network,
           overrides=overrides, quiet=not args.verbose)
    print((args.output / "cv_summary.md").read_text())
    print(f"\nper-fold: {args.output / 'cv_folds.csv'}\nsummary:  {args.output / 'cv_summary.csv'}")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from pipeline.workflows import train_run

    overrides = dict(_parse_overrides(args.override))
    overrides["fold"] = args.fold
    for name in ("preset", "seed", "epochs", "budget_minutes"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    output = args.output or Path("runs") / f"{args.preset or 'default'}_fold{args.fold}"
    run = train_run(args.datalist, output, bundle_dir=args.bundle, overrides=overrides, quiet=args.quiet)
    print(f"\nrun:     {run}\nhistory: {run / 'history.csv'}\nlog:     {run / 'train.log'}")
    print(f"next:    bmtl evaluate --run {run}")
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.workflows import evaluate_datasets, evaluate_run, format_metrics

    overrides = dict(_parse_overrides(args.override))
    if args.datalist and len(args.datalist) > 1:
        if args.output:
            raise ValueError("--output names one evaluation folder: with several --datalist each goes to "
                             "RUN/eval_external_<dataset>_<split>")
        table, _ = evaluate_datasets(args.run, args.datalist, split=args.split, overrides=overrides,
                                     quiet=not args.verbose)
        print(table.read_text())
        print(f"table: {table} and {table.with_suffix('.csv')}")
        return EXIT_OK
    eval_dir = evaluate_run(args.run, split=args.split, datalist=args.datalist[0] if args.datalist else None,
                            eval_dir=args.output, overrides=overrides, quiet=not args.verbose)
    summary = json.loads((eval_dir / "summary.json").read_text())
    print(format_metrics(summary, split={"val": "validation"}.get(args.split, args.split)))
    left_out = summary.get("left_out", {}).get("per_class", {})
    if left_out:
        print("not scored (the model has no such class): " + ", ".join(f"{n} {c}" for c, n in left_out.items()))
    print(f"\nper image: {eval_dir / 'per_image.csv'}\nsummary:   {eval_dir / 'summary.json'}")
    print(f"log:       {Path(args.run).resolve() / 'evaluate.log'}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from pipeline.workflows import markdown_table, compare

    table = compare(args.cv_dirs, args.output)
    print(markdown_table(table))
    if args.output:
        print(f"\nwritten: {args.output} and {args.output.with_suffix('.md')}")
    return EXIT_OK


def _parse_overrides(pairs: list[str]) -> list[tuple[str, object]]:
    import yaml

    parsed = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--override expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        parsed.append((key, yaml.safe_load(value)))
    return parsed


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(args.output, seed=args.seed, epochs=args.epochs, preset=args.network)


def _cmd_export(args: argparse.Namespace) -> int:
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
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.deploy import format_checks, verify_bundle

    rows = verify_bundle(args.bundle, runtimes=args.runtime, device=args.device)
    print(format_checks(rows))
    return EXIT_OK if all(r.ok for r in rows) else EXIT_FAILED


def _cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.inference import predict

    result = predict(
        args.bundle[0] if len(args.bundle) == 1 else args.bundle, args.input, args.output, runtime=args.runtime,
        device=args.device, batch_size=args.batch_size, tta=args.tta, frame=args.frame,
        threshold=args.threshold, refine=True if args.refine else (False if args.no_refine else None),
        explain=args.explain or None,
        overlays=False if args.no_overlays else None, native_resolution=args.native_resolution or None,
        progress=not args.no_progress, overwrite=args.overwrite, resume=args.resume,
    )
    skipped = f", {result.n_skipped} skipped" if result.n_skipped else ""
    models = f"{len(args.bundle)} bundles averaged, " if len(args.bundle) > 1 else ""
    print(f"{result.n_ok} input(s) predicted, {result.n_failed} failed{skipped} ({models}{result.runtime} on "
          f"{result.device})")
    for row in result.rows:
        if row["status"] != "ok":
            print(f"  {row['status']}: {row['file']}: {row['error']}")
    print(f"predictions: {result.csv_path}")
    return result.exit_code


def _cmd_log_model(args: argparse.Namespace) -> int:
    import shutil

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmtl",
        description="Breast tumour segmentation + classification with MONAI: data preparation, networks, demo.",
    )
    from pipeline import __version__

    parser.add_argument("--version", action="version", version=f"bmtl (breast-mtl) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "prepare",
        help="convert a dataset in its original layout into datalist.json + dataset.json (+ skipped.csv)",
        description="Convert a dataset in its original layout into a validated decathlon-style datalist with "
        "patient-level folds. Bad items are skipped and listed in skipped.csv (use --strict to stop instead).",
        epilog="example: bmtl prepare --source busbra --input ../shared/data/BUSBRA --output /tmp/busbra",
    )
    p.add_argument("--source", required=True, choices=["busi", "busbra", "udiat", "folder", "nifti", "dicom"])
    p.add_argument("--input", required=True, type=Path, help="the dataset folder, in its original layout")
    p.add_argument("--output", required=True, type=Path, help="output folder (prepared images, masks, datalist)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input instead of skipping it")
    p.add_argument("--folds", type=int, default=5,
                   help="number of folds when the source has none or a test set is held out (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test-fold", type=int, default=None,
                      help="hold this fold out as the test set (busbra: official fold k is k-1); the other patients "
                      "are split anew into --folds folds for validation")
    test.add_argument("--test-devices", default=None, metavar="NAMES",
                      help="comma-separated scanner names (prefixes) held out as the test set, e.g. "
                      "'Toshiba,U-Systems' (busbra: cross-scanner split); the other patients are split anew")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="comma-separated classes to keep, e.g. 'benign,malignant' (BUSI without its normal images); "
                   "the source's class order is kept")
    p.add_argument("--labels", type=Path, help="udiat: CSV or XLSX with the 'Type' column (default: found in input)")
    p.add_argument("--classes-csv", type=Path, help="nifti/dicom: CSV 'case,class' (default: input/classes.csv)")
    p.add_argument("--axis", type=int, choices=[0, 1, 2], help="nifti/dicom: slicing axis (default 2, axial)")
    p.add_argument(
        "--negative-slices", type=int, help="nifti/dicom: lesion-free slices kept per volume (default 2)"
    )
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser(
        "check-splits",
        help="prove that no patient/group straddles folds",
        epilog="example: bmtl check-splits /tmp/busbra/datalist.json",
    )
    p.add_argument("datalist", type=Path)
    p.set_defaults(func=_cmd_check_splits)

    p = sub.add_parser(
        "dedup",
        help="find exact and near-duplicate images; optionally write a curated datalist",
        epilog="example: bmtl dedup --input /tmp/busi/datalist.json --output /tmp/busi_dedup --curate drop-all",
    )
    p.add_argument("--input", required=True, type=Path, help="an image folder or a datalist.json")
    p.add_argument("--output", type=Path, default=None, help="report folder (default: beside the input)")
    p.add_argument("--threshold", type=float, default=None, help="SSIM threshold for near duplicates")
    p.add_argument(
        "--curate",
        choices=["keep-one", "drop-all"],
        default=None,
        help="write a curated datalist (datalist input only): keep one image per cluster, or drop every image of a "
        "cluster whose members disagree on class and keep one of the others (how Curated BUSI was made)",
    )
    p.set_defaults(func=_cmd_dedup)

    p = sub.add_parser(
        "synth",
        help="write a synthetic dataset (US: BUSI folder layout; MR: NIfTI volumes + labels + classes.csv)",
        epilog="example: bmtl synth --modality us --n 60 --out /tmp/synth_us --seed 0",
    )
    p.add_argument("--modality", required=True, choices=["us", "mr"])
    p.add_argument("--n", type=int, default=60, help="number of images (US) or volumes (MR)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "networks",
        help="table of registered networks: paper, parameters, forward time",
        epilog="example: bmtl networks --size 128",
    )
    p.add_argument("--size", type=int, default=128, help="input size for the forward-time column (default 128)")
    p.add_argument("--repeats", type=int, default=5, help="timed forward passes per network (median reported)")
    p.set_defaults(func=_cmd_networks)

    p = sub.add_parser(
        "train",
        help="train one run with a bundle (python -m monai.bundle run training), log in RUN/train.log",
        description="Train one model through the bundle's training workflow (the same as `python -m monai.bundle "
        "run training ...`). The bundle defaults to the project's bundle for the datalist's modality. A run folder "
        "that already holds checkpoints resumes. The values given here are recorded in RUN/train_args.json, so "
        "`bmtl evaluate --run RUN` scores the run with the same values.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl train --datalist /tmp/busbra/datalist.json --fold 0 --budget-minutes 20 "
        "--output runs/busbra_fold0\n"
        "         bmtl train --datalist D --preset segresnet_shared --override learning_rate=2e-3 --override "
        "flip_tta=false",
    )
    p.add_argument("--datalist", required=True, type=Path, help="a datalist.json made by `bmtl prepare`")
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: by the datalist's modality)")
    p.add_argument("--fold", type=int, default=0, help="validation fold; the other folds train (default 0)")
    p.add_argument("--preset", default=None, help="network preset from configs/ (default: the bundle's)")
    p.add_argument("--output", type=Path, default=None, help="run folder (default runs/<preset>_fold<k>)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the bundle's)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock training budget, validation included; the LR schedule follows it")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the bundle's, 0)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE", help="any other bundle value (repeatable)")
    p.add_argument("--quiet", action="store_true", help="write the training output to RUN/train.log only")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="score a trained run (python -m monai.bundle run evaluating): metrics with CIs, plots, per-image CSV",
        description="Evaluate a run's best checkpoint (models/model.pt) on its validation fold, the test split or a "
        "whole datalist, with the run's own values (RUN/train_args.json or run_config.json). Masks are scored at "
        "each image's own size; summary.json holds bootstrap 95% CIs. Log: RUN/evaluate.log.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl evaluate --run runs/busbra_fold0 --split test",
    )
    p.add_argument("--run", required=True, type=Path, help="a training run folder (made by `bmtl train`)")
    p.add_argument("--split", choices=["val", "test", "all"], default="val",
                   help="val: the run's validation fold (default); test: the datalist's test split; all: every item")
    p.add_argument("--datalist", type=Path, action="append", default=None,
                   help="another prepared datalist (default: the run's); repeat it for one table over several "
                   "datasets (RUN/datasets_<split>.md and .csv); classes are matched by name")
    p.add_argument("--output", type=Path, default=None,
                   help="evaluation folder (default RUN/eval_<split>; one datalist only)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE", help="any other bundle value (repeatable)")
    p.add_argument("--verbose", action="store_true", help="stream the evaluation output")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "cv",
        help="k-fold cross-validation of a bundle: train + evaluate every fold, mean ± std, MLflow parent run",
        epilog="example: bmtl cv --bundle bundles/breast_us_mtl --datalist /tmp/busbra/datalist.json --folds 5 "
        "--network segresnet_effnet --output runs/cv_segresnet_effnet --epochs 20",
    )
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (bundles/breast_us_mtl, ...)")
    p.add_argument("--datalist", required=True, type=Path)
    p.add_argument("--folds", type=int, default=5, help="number of folds to run (0..N-1)")
    p.add_argument("--network", default=None, help="preset name from configs/ (default: the bundle's)")
    p.add_argument("--output", type=Path, default=Path("runs/cv"), help="output folder (default runs/cv)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: the bundle's)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE", help="any other bundle value (repeatable)")
    p.add_argument("--verbose", action="store_true", help="stream the folds' logs instead of writing log files")
    p.set_defaults(func=_cmd_cv)

    p = sub.add_parser(
        "compare",
        help="one table (networks x metrics, mean ± std) from several `bmtl cv` outputs",
        epilog="example: bmtl compare runs/cv_segresnet_effnet runs/cv_mtl_oca --output runs/compare.csv",
    )
    p.add_argument("cv_dirs", nargs="+", type=Path)
    p.add_argument("--output", type=Path, default=None, help="CSV to write (a .md table is written beside it)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "demo",
        help="the main job end to end on synthetic data",
        epilog="example: bmtl demo --output demo_output",
    )
    p.add_argument("--output", type=Path, default=Path("demo_output"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20, help="training epochs of the demo run (default 20)")
    p.add_argument("--network", default=None, help="preset name from configs/ (default: the bundle's)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "export",
        help="export a trained run as a self-contained bundle (TorchScript + ONNX, parity-checked)",
        description="Copy the bundle's configs, pin the run (configs/deploy.yaml), fill metadata.json, and export the "
        "network through the (seg, cls) wrapper to TorchScript and/or ONNX (one file). Each export must match the "
        "eager network within --atol on random and synthetic inputs, else nothing is written (exit 1). "
        "Layout: docs/README.md of the bundle.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl export --bundle bundles/breast_us_mtl --run runs/segresnet_effnet_fold0 "
        "--output exported/breast_us_mtl --format torchscript onnx\n"
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

    p = sub.add_parser(
        "predict",
        help="segment and classify new images with an exported bundle",
        description="Predict every image of --input (a file or a folder, recursive: PNG/JPEG/BMP/TIFF, DICOM files "
        "and series folders, 2D/3D NIfTI, 3D NRRD) with an exported bundle. Writes masks in each input's geometry "
        "(masks/*_mask.png 0/255 at the original size and orientation; masks/*_mask.nii.gz with the input's affine "
        "and header; masks/*_mask.nrrd in an NRRD input's space), overlays/*_overlay.png, optional Grad-CAM "
        "heatmaps/*_gradcam.png, and predictions.csv (one row per input; a bad input gets an error row and the "
        "others go on).",
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
    p.add_argument("--threshold", type=float, default=None, help="lesion probability threshold (default: bundle's)")
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
    rerun = p.add_mutually_exclusive_group()
    rerun.add_argument("--overwrite", action="store_true",
                       help="replace the predictions of an earlier run in --output (refused otherwise)")
    rerun.add_argument("--resume", action="store_true",
                       help="finish an interrupted run in --output: inputs it predicted are not predicted again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.data.io import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
