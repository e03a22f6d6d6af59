"""BUS-BRA benchmark: every registered network and the two single-task baselines at the same training budget.

    python benchmarks/busbra.py --data ../shared/data/BUSBRA --output runs/bench_busbra --budget-minutes 3

What it does (each bundle run is the same ``python -m monai.bundle run ...`` a user types):
1. prepares BUS-BRA with its official patient-level folds (``bmtl prepare --source busbra``), unless ``--datalist``;
2. measures each network's training throughput (plain PyTorch loop, batch 16) and gives it the epochs that fit
   ``--budget-minutes`` of training (equal wall-clock budget: a slow network gets fewer epochs; at least 1);
3. trains every network on folds 2-5 and evaluates it on official fold 1 (datalist fold 0), with bootstrap 95 % CIs;
   there is no model selection on the test fold: validation runs once, after the last epoch, and that model is scored;
4. evaluates the ``--best`` multi-task networks (joint score = mean of Dice and AUC on fold 1) and the single-task
   baselines on the same test images under two synthetic scanner shifts (``bench.SHIFTS``), and runs all
   five folds for those best networks; with a CUDA device (or ``--all-folds``) every network gets the shifted sets
   and all five folds (``--size`` then defaults to 256);
5. logs one MLflow parent run (``<output>/mlruns.db``) with every bundle run nested under it, writes
   ``<output>/results.csv`` and replaces the ``busbra`` section of ``BENCHMARKS.md``.

Finished runs are kept (``<output>/runs/<network>/fold<k>/done.json``): running the command again resumes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bench  # noqa: E402
from pipeline.atomic import write_csv_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from pipeline.data.datalist import split_items  # noqa: E402
from pipeline.networks.table import count_parameters  # noqa: E402
from pipeline.presets import available_presets, load_preset  # noqa: E402
from pipeline.registry import list_networks, network_info  # noqa: E402
from pipeline.workflows import run_bundle  # noqa: E402

EXPERIMENT = "busbra_benchmark"


class Benchmark:
    def __init__(self, args: argparse.Namespace, datalist: Path) -> None:
        self.args, self.datalist = args, datalist
        self.output = Path(args.output).resolve()
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.output / 'mlruns.db'}"
        self.plan_path = self.output / "plan.json"
        self.plan: dict[str, dict[str, Any]] = json.loads(self.plan_path.read_text()) if self.plan_path.exists() else {}

    # ---- planning: throughput -> epochs, once per network (kept in plan.json so a resumed run keeps its budget)
    def epochs_for(self, preset: str, fold: int) -> int:
        key = f"{preset}@{self.args.size}"
        if key not in self.plan:
            ips = bench.train_images_per_second(preset, size=self.args.size, batch=load_preset(preset)["batch_size"])
            self.plan[key] = {
                "train_images_per_second": round(ips, 2),
                "inference_ms": round(bench.inference_ms_per_image(preset, size=self.args.size), 2),
                "parameters": count_parameters(bench.build_preset_network(preset)),
            }
            write_json_atomic(self.plan_path, self.plan, indent=1)
        n_train = len(split_items(self.datalist, fold, "train"))
        return bench.plan_epochs(self.plan[key]["train_images_per_second"], n_train, self.args.budget_minutes * 60)

    # ---- one network on one fold: train, evaluate, evaluate under the shifts
    def run(self, preset: str, fold: int, shifts: dict[str, Path]) -> dict[str, Any]:
        run_dir = self.output / "runs" / preset / f"fold{fold}"
        done = run_dir / "done.json"
        previous = json.loads(done.read_text()) if done.exists() else {}
        if previous and set(shifts) <= set(previous.get("shifts", [])):
            return previous
        overrides = {
            "datalist": str(self.datalist), "fold": fold, "preset": preset, "output_dir": str(run_dir),
            "seed": self.args.seed, "image_size": [self.args.size, self.args.size], "tracking_uri": self.tracking_uri,
            "experiment_name": EXPERIMENT, "run_name": f"{preset}_fold{fold}",
        }
        start, trained = time.perf_counter(), False
        if not (run_dir / "models" / "model.pt").exists():
            trained = True
            epochs = self.epochs_for(preset, fold)  # only training needs the plan (it may measure throughput)
            print(f"[bench] {preset} fold {fold}: training {epochs} epoch(s) ...", flush=True)
            run_bundle(self.args.bundle, "training", {**overrides, "epochs": epochs, "val_interval": epochs},
                       log_file=run_dir / "log_train.txt")
        train_wall = time.perf_counter() - start
        eval_sets = {"clean": (self.datalist, "eval_val")} | {k: (p, f"eval_{k}") for k, p in shifts.items()}
        for name, (datalist, folder) in eval_sets.items():
            if not (run_dir / folder / "summary.json").exists():
                print(f"[bench] {preset} fold {fold}: evaluating ({name}) ...", flush=True)
                run_bundle(self.args.bundle, "evaluating",
                           {**overrides, "datalist": str(datalist), "split": "val",
                            "eval_dir": str(run_dir / folder), "n_bootstrap": 1000 if name == "clean" else 0,
                            "run_name": overrides["run_name"] + ("" if name == "clean" else f"_{name}")},
                           log_file=run_dir / f"log_{folder}.txt")
        history = pd.read_csv(run_dir / "history.csv")
        record = {
            "preset": preset, "fold": fold, "epochs": int(history["epoch"].max()),
            "epoch_seconds": float(history["epoch_seconds"].mean()),
            # training process wall time (start-up, caching, final validation included); kept when only evaluating
            "train_wall_seconds": round(train_wall, 1) if trained else previous.get("train_wall_seconds"),
            "shifts": sorted(shifts),
        }
        write_json_atomic(done, record, indent=1)   # done.json marks the run finished: never half-written
        return record

    def results(self, preset: str, fold: int, folder: str = "eval_val") -> dict[str, Any]:
        return bench.read_summary(self.output / "runs" / preset / f"fold{fold}" / folder)


def prepare_busbra(args: argparse.Namespace) -> Path:
    if args.datalist:
        return Path(args.datalist).resolve()
    from pipeline.data.prepare import prepare

    out = Path(args.output).resolve() / "data"
    if not (out / "datalist.json").exists():
        print(f"[bench] preparing BUS-BRA from {args.data} into {out} ...", flush=True)
        prepare("busbra", args.data, out)
    return out / "datalist.json"


def tasks_of(preset: str) -> tuple[str, ...]:
    return network_info(load_preset(preset)["network_name"]).tasks


def is_multitask(preset: str) -> bool:
    return len(tasks_of(preset)) == 2


def joint(metrics: dict[str, Any]) -> float:
    return (metrics["dice"]["mean"] + metrics["auc"]["mean"]) / 2


def log_parent(bench_: Any, params: dict[str, Any], rows: list[dict[str, Any]], files: list[Path],
               experiment: str = EXPERIMENT, name: str | None = None) -> None:
    """One MLflow parent run (``name``, default from the size and budget) in ``experiment`` of ``bench_``'s store:
    params, one metric per row (``<network>.fold<fold>.<metric>``), ``files`` as artifacts, and every other run of
    the experiment nested under it (the newest of each name kept)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=bench_.tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=(bench_.output / "mlartifacts").as_uri())
    name = name or f"benchmark_{params['size']}px_{params['budget_minutes']}min"
    # a resumed benchmark updates its (newest) parent run instead of adding a second one
    newest_first = ["attributes.start_time DESC"]
    existing = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{name}'", max_results=1,
                                  order_by=newest_first)
    parent = existing[0] if existing else client.create_run(experiment_id, run_name=name)
    for key, value in params.items():
        try:
            client.log_param(parent.info.run_id, key, str(value)[:500])
        except MlflowException:  # a resumed benchmark with another value (e.g. the commit): params are immutable
            client.set_tag(parent.info.run_id, key, str(value)[:500])
    for row in rows:
        for metric in bench.REPORTED_METRICS:
            if metric in row and row[metric] is not None:
                client.log_metric(parent.info.run_id, f"{row['network']}.fold{row['fold']}.{metric}",
                                  float(row[metric]["mean"]))
    for path in files:
        client.log_artifact(parent.info.run_id, str(path))
    # every bundle run of this store's experiment is one of the benchmark's: nest them under the parent (MLflow UI).
    # Keep only the newest run of each name: a retrained run (its folder deleted) leaves an older bundle run, an
    # interrupted older version of this script a second parent.
    seen = set()
    for run in client.search_runs([experiment_id], max_results=5000, order_by=newest_first):
        if run.info.run_name in seen:
            client.delete_run(run.info.run_id)
            continue
        seen.add(run.info.run_name)
        if run.info.run_id != parent.info.run_id and not run.info.run_name.startswith("benchmark_"):
            client.set_tag(run.info.run_id, "mlflow.parentRunId", parent.info.run_id)
    client.set_terminated(parent.info.run_id)


def report(bench_: Benchmark, records: list[dict[str, Any]], best: list[str], command: str, started: str) -> str:
    args = bench_.args
    fold0 = [r for r in records if r["fold"] == 0]
    lines = [
        f"Command: `{command}`  ",
        f"Commit {bench.git_commit()}, {started} to {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
        f"hardware: {bench.hardware_summary()}.  ",
        f"Budget: {args.budget_minutes} min of training per network and fold at {args.size}x{args.size}, seed "
        f"{args.seed}, batch and recipe of each preset (`configs/<network>.yaml`); epochs = round(budget x measured "
        f"plain-loop throughput / training images), at least 1. Trained on official folds 2-5, scored on fold 1 "
        f"(datalist fold 0) at the images' own size, last epoch's model (no selection on the test fold). "
        f"Brackets: bootstrap 95 % CI over the test images (1000 resamples). HD95 in pixels. "
        f"Single-task baselines leave the other task's cells as '-'.",
        "",
        f"### Fold 1 (n = {len(split_items(bench_.datalist, 0, 'val'))} test images), every network",
        "",
    ]
    rows = []
    # multi-task networks by joint score (mean of Dice and AUC), then the single-task baselines
    for r in sorted(fold0, key=lambda r: (not is_multitask(r["preset"]), -joint(bench_.results(r["preset"], 0)))):
        plan = bench_.plan[f"{r['preset']}@{args.size}"]
        rows.append({
            "network": r["preset"], "network_name": load_preset(r["preset"])["network_name"], "fold": 0,
            **bench_.results(r["preset"], 0), "parameters": f"{plan['parameters']:,}", "epochs": r["epochs"],
            "epoch_s": f"{r['epoch_seconds']:.0f}", "ips": f"{plan['train_images_per_second']:.1f}",
            "inference_ms": f"{plan['inference_ms']:.1f}",
        })
    lines.append(bench.markdown_results(rows, extra=[
        ("parameters", "parameters"), ("epochs", "epochs"), ("train s/epoch", "epoch_s"),
        ("plain-loop train img/s", "ips"), ("inference ms/image (batch 1)", "inference_ms")]))
    if args.shifts:
        lines += ["", "### Robustness: the same fold-1 images under synthetic scanner shifts", "",
                  "gain: gamma 0.6 and depth attenuation to 60 %; speckle: multiplicative gamma speckle (std 0.35) "
                  "and 1-px blur (`benchmarks/bench.py: shift_image`). Dice / AUC, and the change from the clean "
                  "images.", "",
                  "| network | clean Dice | clean AUC | " + " | ".join(
                      f"{s} Dice | {s} AUC" for s in args.shifts) + " |",
                  "|---|" + "---:|" * (2 + 2 * len(args.shifts))]
        for row in rows:
            if not (bench_.output / "runs" / row["network"] / "fold0" / f"eval_{args.shifts[0]}").exists():
                continue
            tasks = network_info(row["network_name"]).tasks
            cells = [row["network"]]
            clean = bench_.results(row["network"], 0)
            for source in ["clean", *args.shifts]:
                m = clean if source == "clean" else bench_.results(row["network"], 0, f"eval_{source}")
                for metric, task in (("dice", "seg"), ("auc", "cls")):
                    if task not in tasks:
                        cells.append("-")
                    elif source == "clean":
                        cells.append(f"{m[metric]['mean']:.3f}")
                    else:
                        cells.append(f"{m[metric]['mean']:.3f} ({m[metric]['mean'] - clean[metric]['mean']:+.3f})")
            lines.append("| " + " | ".join(cells) + " |")
    # paired comparisons against the single-task baselines on the same images
    baselines = {task: [r["preset"] for r in fold0 if tasks_of(r["preset"]) == (task,)] for task in ("seg", "cls")}
    # the best networks, and the like-for-like ablation: the baselines' own parts trained jointly
    compared = best + [p for p in ("segresnet_effnet_parallel",) if p in {r["preset"] for r in fold0} and p not in best]
    pairs = [(b, base, metric) for metric, task in (("dice", "seg"), ("auc", "cls")) for base in baselines[task]
             for b in compared]
    pair_lines = []
    for a, b, metric in pairs:
        pa = bench_.output / "runs" / a / "fold0" / "eval_val" / "per_image.csv"
        pb = bench_.output / "runs" / b / "fold0" / "eval_val" / "per_image.csv"
        if pa.exists() and pb.exists():
            d = bench.paired_bootstrap(pa, pb)[metric]
            p_text = f"{d['p']:.3f}" if d["p"] > 0 else "< 0.001"  # 1000 resamples, none on the other side of 0
            pair_lines.append(f"| {a} - {b} | {metric} | {d['diff']:+.3f} | {d['lo']:+.3f} to {d['hi']:+.3f} | "
                              f"{p_text} |")
    if pair_lines:
        lines += ["", "### Multi-task vs single-task on fold 1 (paired bootstrap over the same images)", "",
                  "| comparison | metric | difference | 95 % CI | p |", "|---|---|---:|---:|---:|", *pair_lines]
    folds_all = sorted({r["fold"] for r in records})
    multi = {}
    for r in records:
        multi.setdefault(r["preset"], []).append(r)
    cv_rows = []
    for preset, recs in multi.items():
        if len(recs) < 2:
            continue
        per_fold = [bench_.results(preset, r["fold"]) for r in recs]
        row: dict[str, Any] = {"network": f"{preset} ({len(recs)} folds)",
                               "network_name": load_preset(preset)["network_name"]}
        for metric in bench.REPORTED_METRICS:
            values = np.array([m[metric]["mean"] for m in per_fold])
            row[metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1))}
        cv_rows.append(row)
    if cv_rows:
        lines += ["", f"### Cross-validation on the official folds ({', '.join(str(f + 1) for f in folds_all)}), "
                  "mean ± std over the folds each network has finished", "", bench.markdown_results(cv_rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "BUSBRA"),
                        help="BUS-BRA in its original layout (Images/, Masks/, bus_data.csv, 5-fold-cv.csv)")
    parser.add_argument("--datalist", default=None, help="an already prepared datalist.json (skips preparation)")
    parser.add_argument("--output", default=str(REPO / "runs" / "bench_busbra"))
    parser.add_argument("--bundle", default=str(REPO / "bundles" / "breast_us_mtl"))
    parser.add_argument("--budget-minutes", type=float, default=3.0, help="training budget per network and fold")
    parser.add_argument("--size", type=int, default=None, help="training size (default 128 on CPU, 256 on CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--networks", nargs="*", default=None,
                        help="presets to run (default: the preset of every registered network)")
    parser.add_argument("--best", type=int, default=2, help="multi-task networks that also run all folds")
    parser.add_argument("--all-folds", action=argparse.BooleanOptionalAction, default=None,
                        help="every network on every fold (default: on when CUDA is available)")
    parser.add_argument("--shifts", nargs="*", default=list(bench.SHIFTS), choices=bench.SHIFTS)
    parser.add_argument("--report", default=str(REPO / "BENCHMARKS.md"), help="Markdown file whose section is replaced")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing more: report the finished fold-1 runs and whatever other folds are done")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.size = args.size or (256 if cuda else 128)
    all_folds = cuda if args.all_folds is None else args.all_folds
    command = "python benchmarks/busbra.py " + " ".join(argv if argv is not None else sys.argv[1:])

    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    datalist = prepare_busbra(args)
    runner = Benchmark(args, datalist)
    started = runner.plan.setdefault("started", dt.datetime.now().strftime("%Y-%m-%d %H:%M"))  # kept on resume
    write_json_atomic(runner.plan_path, runner.plan, indent=1)
    presets = args.networks or [n for n in list_networks() if n in available_presets()]
    folds = sorted({item["fold"] for item in json.loads(datalist.read_text())["training"]})

    shifts = {kind: bench.write_shifted_datalist(datalist, 0, output / "shifted" / kind, kind, seed=args.seed)
              for kind in args.shifts if not (output / "shifted" / kind / "datalist.json").exists()}
    shifts |= {kind: output / "shifted" / kind / "datalist.json" for kind in args.shifts}

    records = [runner.run(p, 0, {}) for p in presets]
    multitask = [r["preset"] for r in records if is_multitask(r["preset"])]
    best = sorted(multitask, key=lambda p: -joint(runner.results(p, 0)))[: args.best]
    print(f"[bench] best multi-task networks on fold 1: {best}", flush=True)
    # the shifted test sets: the best multi-task networks and the single-task baselines (every network with --all-folds)
    shifted = [r for r in records if all_folds or r["preset"] in best or not is_multitask(r["preset"])]
    records = [runner.run(r["preset"], 0, shifts) if r in shifted else r for r in records]
    for preset in presets if all_folds else best:
        if args.report_only:  # the folds finished so far
            done = [output / "runs" / preset / f"fold{f}" / "done.json" for f in folds if f != 0]
            records += [json.loads(p.read_text()) for p in done if p.exists()]
        else:
            records += [runner.run(preset, f, {}) for f in folds if f != 0]

    table = pd.DataFrame([{**r, **{m: runner.results(r["preset"], r["fold"])[m]["mean"]
                                   for m in bench.REPORTED_METRICS}} for r in records])
    write_csv_atomic(output / "results.csv", table, index=False)
    text = report(runner, records, best, command, started)
    write_text_atomic(output / "benchmark.md", text + "\n")
    bench.replace_section(args.report, "busbra", text)
    rows = [{"network": r["preset"], "fold": r["fold"], **runner.results(r["preset"], r["fold"])} for r in records]
    log_parent(runner, {"size": args.size, "budget_minutes": args.budget_minutes, "seed": args.seed,
                        "networks": presets, "best": best, "commit": bench.git_commit(),
                        "hardware": bench.hardware_summary(),
                        "command": command}, rows, [output / "results.csv", output / "benchmark.md"])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
