"""Data commands: ``prepare``, ``check-splits``, ``dedup``, ``synth``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.common import EXIT_FAILED, EXIT_OK

__all__ = ["add_data_commands"]


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option (``--classes``, ``--test-devices``, ``--val-devices``) as its names, blanks dropped;
    ``None`` when the option is not given."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def _cmd_prepare(args: argparse.Namespace) -> int:
    from pipeline.data.datalist import format_summary
    from pipeline.data.prepare import prepare, prepared_summary

    if not args.input.exists():   # a path on the command line that is not there: a usage error (exit 2)
        raise FileNotFoundError(f"--input {args.input}: input folder not found (give the dataset folder in its "
                                "original layout)")
    options = {}
    for name in ("labels", "axis", "negative_slices", "classes_csv"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    prepared, paths = prepare(
        args.source, args.input, args.output, strict=args.strict, n_folds=args.folds, seed=args.seed,
        test_fold=args.test_fold, test_devices=_names(args.test_devices), val_devices=_names(args.val_devices),
        classes=_names(args.classes), **options
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
    from pipeline.data.curate import run_dedup

    report = run_dedup(args.input, args.output, threshold=args.threshold, curate=args.curate)
    print(json.dumps({k: str(v) for k, v in report.items()}, indent=2))
    return EXIT_OK


def _cmd_synth(args: argparse.Namespace) -> int:
    from pipeline.data import synthetic

    make = synthetic.make_us_dataset if args.modality == "us" else synthetic.make_mr_dataset
    out = make(args.out, n=args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic {args.modality.upper()} cases to {out}")
    return EXIT_OK


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Register the sub-commands of this module on ``sub``."""
    p = sub.add_parser(
        "prepare",
        help="convert a dataset in its original layout into datalist.json + dataset.json (+ skipped.csv)",
        description="Convert a dataset in its original layout into a validated decathlon-style datalist with "
        "patient-level folds. Bad items are skipped and listed in skipped.csv (use --strict to stop instead).",
        epilog="example: bmtl prepare --source busbra --input ~/data/BUSBRA --output /tmp/busbra",
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
    p.add_argument("--val-devices", default=None, metavar="NAMES",
                   help="comma-separated scanner names (prefixes) whose patients make validation fold 0, the others "
                   "folds 1 to --folds - 1 (train with --fold 0 to validate on a scanner not trained on, e.g. "
                   "'GE Logiq 5' with --test-devices 'Toshiba,U-Systems')")
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
