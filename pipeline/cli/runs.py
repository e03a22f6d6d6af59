"""Training and evaluation commands: ``networks``, ``train``, ``evaluate``, ``cv``, ``compare``, ``demo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.common import EXIT_OK, parse_overrides, require_datalists
from pipeline.switches import require_fold

__all__ = ["add_runs_commands"]


def _fold(value: str) -> int | str:
    """``--fold``: an index, or ``all`` (nnU-Net's: train on every fold), as the bundle checks it."""
    try:
        return require_fold(int(value) if value.isdigit() else value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _default_split(run: Path) -> str:
    """``val``, or ``test`` for a run trained with ``--fold all`` (it has no validation fold)."""
    try:
        fold = json.loads((Path(run) / "run_config.json").read_text()).get("fold")
    except (OSError, ValueError):
        fold = None   # evaluate_run names a missing or unreadable run_config.json
    return "test" if fold == "all" else "val"


def _cmd_networks(args: argparse.Namespace) -> int:
    from pipeline.networks.table import network_table

    print(network_table(size=args.size, repeats=args.repeats))
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    require_datalists(args.datalist)   # before torch is imported: a usage error answers at once
    from pipeline.workflows import train_run

    overrides = dict(parse_overrides(args.override))
    overrides["fold"] = args.fold
    for name in ("preset", "seed", "epochs", "budget_minutes"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    output = args.output or Path("runs") / f"{args.preset or 'default'}_fold{args.fold}"
    run = train_run(args.datalist, output, bundle_dir=args.bundle, overrides=overrides, quiet=args.quiet)
    print(f"\nrun:     {run}\nhistory: {run / 'history.csv'}\nlog:     {run / 'train.log'}")
    print(f"next:    bmtl evaluate --run {run}" + (" --split test" if args.fold == "all" else ""))
    return EXIT_OK


def _print_left_out(summary: dict) -> None:
    left_out = summary.get("left_out", {}).get("per_class", {})
    if left_out:
        print("not scored (the model has no such class): " + ", ".join(f"{n} {c}" for c, n in left_out.items()))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    require_datalists(args.datalist)   # before torch is imported: a usage error answers at once
    from pipeline.handlers.summary import format_metrics
    from pipeline.workflows import evaluate_bundle, evaluate_datasets, evaluate_run

    overrides = dict(parse_overrides(args.override))
    if args.ensemble and (args.bundle is not None or (args.datalist and len(args.datalist) > 1)):
        raise ValueError("--ensemble averages training runs with --run, on one datalist (for exported bundles: "
                         "`bmtl predict --bundle A --bundle B`)")
    if args.bundle is not None:   # an exported bundle: external validation of the model as deployed
        if args.output is None or not args.datalist:
            raise ValueError("--bundle needs --datalist (one or more) and --output (where the evaluations go)")
        split = args.split or "all"
        table, evaluations = evaluate_bundle(args.bundle, args.datalist, args.output, split=split,
                                             overrides=overrides, quiet=not args.verbose)
        if len(evaluations) > 1:
            print(table.read_text())
            print(f"table: {table}, {table.with_suffix('.csv')} and the page {table.with_suffix('.html')}")
        else:
            name = evaluations[0][0]
            print(format_metrics(evaluations[0][1], split={"val": "validation"}.get(name, name.replace("_", " "))))
            _print_left_out(evaluations[0][1])
            print(f"\nevaluation: {table.parent}")
        return EXIT_OK
    split = args.split or _default_split(args.run)
    if args.datalist and len(args.datalist) > 1:
        if args.output:
            raise ValueError("--output names one evaluation folder: with several --datalist each goes to "
                             "RUN/eval_external_<dataset>_<split>")
        table, _ = evaluate_datasets(args.run, args.datalist, split=split, overrides=overrides,
                                     quiet=not args.verbose)
        print(table.read_text())
        print(f"table: {table}, {table.with_suffix('.csv')} and the page {table.with_suffix('.html')}")
        return EXIT_OK
    eval_dir = evaluate_run(args.run, split=split, datalist=args.datalist[0] if args.datalist else None,
                            eval_dir=args.output, overrides=overrides, quiet=not args.verbose,
                            ensemble=args.ensemble or ())
    summary = json.loads((eval_dir / "summary.json").read_text())
    print(format_metrics(summary, split={"val": "validation"}.get(split, split)))
    _print_left_out(summary)
    print(f"\nper image: {eval_dir / 'per_image.csv'}\nsummary:   {eval_dir / 'summary.json'}")
    print(f"log:       {Path(args.run).resolve() / 'evaluate.log'}")
    return EXIT_OK


def _cmd_cv(args: argparse.Namespace) -> int:
    require_datalists(args.datalist)   # before torch is imported: a usage error answers at once
    from pipeline.cross_validation import run_cv

    overrides = dict(parse_overrides(args.override))
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    run_cv(args.bundle, args.datalist, args.output, folds=args.folds, preset=args.network,
           overrides=overrides, quiet=not args.verbose)
    print((args.output / "cv_summary.md").read_text())
    print(f"\nper-fold: {args.output / 'cv_folds.csv'}\nsummary:  {args.output / 'cv_summary.csv'}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from pipeline.cross_validation import compare, markdown_table

    table = compare(args.cv_dirs, args.output)
    print(markdown_table(table))
    if args.output:
        print(f"\nwritten: {args.output}, {args.output.with_suffix('.md')} and the figure "
              f"{args.output.with_suffix('.png')}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(args.output, seed=args.seed, epochs=args.epochs, preset=args.network)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """``bmtl evaluate`` and its options."""
    p = sub.add_parser(
        "evaluate",
        help="score a trained run or an exported bundle (python -m monai.bundle run evaluating): metrics with CIs, "
        "plots, per-image CSV",
        description="Evaluate a run's best checkpoint (models/model.pt) on its validation fold, the test split or a "
        "whole datalist, with the run's own values (RUN/train_args.json or run_config.json); or an exported bundle "
        "(--bundle, `bmtl export`) with its pinned values on any prepared datalist (external validation). Classes are "
        "matched by name; masks are scored at each image's own size; summary.json holds bootstrap 95% CIs. Log: "
        "RUN/evaluate.log (OUTPUT/evaluate_<evaluation>.log for a bundle).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: bmtl evaluate --run runs/busbra_fold0 --split test\n"
        "         bmtl evaluate --run runs/fold0 --ensemble runs/fold1 --ensemble runs/fold2 --split test\n"
        "         bmtl evaluate --bundle exported/breast_us_mtl --datalist other/datalist.json --output eval_other",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="a training run folder (made by `bmtl train`)")
    which.add_argument("--bundle", type=Path, help="an exported bundle folder (made by `bmtl export`); needs "
                       "--datalist and --output")
    p.add_argument("--split", choices=["val", "test", "all"], default=None,
                   help="val: the run's validation fold (default for --run); test: the datalist's test split; all: "
                   "every item (default for --bundle)")
    p.add_argument("--datalist", type=Path, action="append", default=None,
                   help="another prepared datalist (default: the run's); repeat it for one table over several "
                   "datasets (RUN/datasets_<split>.md and .csv); classes are matched by name")
    p.add_argument("--output", type=Path, default=None,
                   help="evaluation folder (default RUN/eval_<split>; one datalist only); with --bundle: the folder "
                   "for every evaluation (OUTPUT/eval_external_<dataset>_<split>) and their table")
    p.add_argument("--ensemble", type=Path, action="append", default=None, metavar="RUN",
                   help="another training run of the same configuration (e.g. another cross-validation fold), "
                   "repeatable: a fold ensemble averaging the runs' probabilities as `bmtl predict` averages bundles "
                   "(default folder RUN/eval_<split>_ensemble)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE", help="any other bundle value (repeatable)")
    p.add_argument("--verbose", action="store_true", help="stream the evaluation output")
    p.set_defaults(func=_cmd_evaluate)


def add_runs_commands(sub: argparse._SubParsersAction) -> None:
    """Register the sub-commands of this module on ``sub``."""
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
    p.add_argument("--fold", type=_fold, default=0,
                   help="validation fold; the other folds train (default 0); all: every fold trains, no validation, "
                        "the last epoch is the model")
    p.add_argument("--preset", default=None, help="network preset: a name from configs/ or a YAML file, merged as one "
                   "more config file (configs/README.md; default: the bundle's own)")
    p.add_argument("--output", type=Path, default=None, help="run folder (default runs/<preset>_fold<k>)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the bundle's)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock training budget, validation included; the LR schedule follows it")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the bundle's, 0)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE", help="any other bundle value (repeatable)")
    p.add_argument("--quiet", action="store_true", help="write the training output to RUN/train.log only")
    p.set_defaults(func=_cmd_train)

    _add_evaluate_parser(sub)

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
    p.add_argument("--epochs", type=int, default=16, help="training epochs of the demo run (default 16)")
    p.add_argument("--network", default=None, help="preset name from configs/ (default: the bundle's)")
    p.set_defaults(func=_cmd_demo)
