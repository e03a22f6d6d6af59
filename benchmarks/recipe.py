"""Recipe benchmark (issue 12): the bundle's default recipe against the plain MONAI reference, at one training budget.

    python benchmarks/recipe.py --data ../shared/data/BUSBRA --output runs/recipe --split A --budget-minutes 20
    python benchmarks/recipe.py --data ../shared/data/BUSBRA --output runs/recipe --split B --budget-minutes 20 \\
        --seeds 0 1 2 --rows reference default shared_recipe --section recipe_B_seeds

Splits (each prepared with ``bmtl prepare --source busbra``; the validation fold is drawn from training patients):
- ``A`` (in-domain): ``--test-fold 0`` (official fold 1 is the test set), the other patients in 10 folds; training
  runs on 9 of them and selects its checkpoint on fold 0, never on the test set.
- ``B`` (cross-scanner, a stand-in for other hospitals): ``--test-devices Toshiba,U-Systems``; training on the two GE
  scanners, the same 10-fold validation split.
- ``C`` (cross-scanner, validated on a scanner not trained on): split B's test set, validation fold 0 the GE Logiq 5
  patients (``--val-devices``), so bundle rows train on GE Logiq 7 alone and a recipe for other hospitals can be chosen
  on a held-out scanner (leave-one-domain-out validation); the reference trains on every training patient, as in B,
  so split C reads (and, where missing, trains) split B's reference runs (``reference_split``).

Rows (``ROWS``, in ``benchmarks/recipe_rows.py``): ``reference`` is ``benchmarks/reference.py`` (plain MONAI, last
epoch, threshold only); every other row is the stock bundle (``python -m monai.bundle run training`` with
``--datalist`` and ``--fold`` plus the row's overrides; ``zoo_<preset>``: another network with its preset) or an
evaluation-only variant of a trained row (the same weights, other post-processing), or a fold ensemble (one run per
validation fold, ``<row>_seed<k>_member<j>`` beside the row's own, scored together). Every row is scored by the
bundle's ``evaluating`` workflow on the test split (Dice/Jaccard at each image's own size, bootstrap 95 % CIs) and
compared with the reference of the same seed by a paired bootstrap.

Budget: ``--budget-mode epochs`` (default) converts the budget into epochs from each training row's epoch time
measured in a 2-epoch calibration run (validation included), so the comparison holds when the machine is busy; run
it on an idle machine (the calibration is what must be idle; ``--calibrate-only`` runs a whole queue's calibrations
first and stops). ``--budget-mode wall`` passes the budget itself (``--budget_minutes`` of the bundle,
``--budget-minutes`` of the reference): only on an idle machine.

Everything is resumable (``done.json`` per run, ``plan.json`` for the calibrations); one MLflow parent run per split
(``<output>/mlruns.db``) holds every bundle run; ``<output>/results_<split>.csv``; the ``recipe_<split>`` section of
``BENCHMARKS.md`` is replaced (``--section`` names another, e.g. for a seeds table beside the one-seed ablations).
With several seeds the section ends with each row's mean and standard deviation over the seeds and its paired
difference against the reference averaged over the seeds (the section: ``benchmarks/recipe_report.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busbra import log_parent  # noqa: E402

import bench  # noqa: E402
from pipeline.atomic import write_csv_atomic, write_json_atomic  # noqa: E402
from pipeline.data.datalist import split_items  # noqa: E402
from pipeline.handlers.operating_point import OPERATING_POINT, write_operating_point  # noqa: E402
from pipeline.registry import network_info  # noqa: E402
from pipeline.workflows import run_bundle  # noqa: E402
from recipe_report import records_frame, report  # noqa: E402
from recipe_rows import (BUNDLE, PLAIN_POST, ROWS, check_reusable, inference_key, row_config,  # noqa: E402
                         timed_network, trained_row, trains_on_all, validated)

EXPERIMENT = "recipe_benchmark"
SPLITS = {
    "A": {"test_fold": 0, "title": "split A (in-domain): official fold 1 held out"},
    "B": {"test_devices": ["Toshiba", "U-Systems"],
          "title": "split B (cross-scanner): train on GE Logiq 7 + Logiq 5, test on Toshiba Aplio 300 + U-Systems"},
    "C": {"test_devices": ["Toshiba", "U-Systems"], "val_devices": ["GE Logiq 5"], "reference_split": "B",
          "title": "split C (cross-scanner, validated on a scanner not trained on): train on GE Logiq 7, validate on "
                   "GE Logiq 5, test on Toshiba Aplio 300 + U-Systems"},
}
VAL_FOLDS, VAL_FOLD = 10, 0


class RecipeBenchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.output = Path(args.output).resolve()
        self.split = args.split
        self.root = self.output / f"split{self.split}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.output / 'mlruns.db'}"
        self.plan_path = self.root / "plan.json"
        self.plan: dict[str, Any] = json.loads(self.plan_path.read_text()) if self.plan_path.exists() else {}
        self.datalist = self.prepare()
        self.n_train = len(split_items(self.datalist, VAL_FOLD, "train"))
        self.n_all = self.n_train + len(split_items(self.datalist, VAL_FOLD, "val"))
        self.reference_source = self._reference_source()

    def _reference_source(self) -> RecipeBenchmark:
        """The benchmark whose runs are this split's reference rows: its own, or, for a split whose reference
        trains on the same images as another's (``reference_split``), that split's, so the reference is trained,
        calibrated and timed once, where it belongs; refused unless both test on the same images.

        Raises:
            RuntimeError: the two splits' test images differ.
        """
        other = SPLITS[self.split].get("reference_split")
        if other is None or self.args.datalist:
            return self
        source = RecipeBenchmark(argparse.Namespace(**{**vars(self.args), "split": other}))
        ours, theirs = (sorted((item["id"], item["cls"]) for item in split_items(b.datalist, VAL_FOLD, "test"))
                        for b in (self, source))
        if ours != theirs:
            raise RuntimeError(f"split {self.split} reads split {other}'s reference runs, but their test images "
                               f"differ ({self.datalist} against {source.datalist})")
        return source

    def owner(self, name: str) -> RecipeBenchmark:
        """The benchmark that trains and scores row ``name``: the reference source for the reference."""
        return self.reference_source if ROWS[trained_row(name)].kind == "reference" else self

    # ---- data
    def prepare(self) -> Path:
        if self.args.datalist:
            return Path(self.args.datalist).resolve()
        out = self.output / f"data_{self.split}"
        if not (out / "datalist.json").exists():
            from pipeline.data.prepare import prepare

            print(f"[recipe] preparing {SPLITS[self.split]['title']} into {out} ...", flush=True)
            options = {k: v for k, v in SPLITS[self.split].items() if k in ("test_fold", "test_devices", "val_devices")}
            prepare("busbra", self.args.data, out, n_folds=VAL_FOLDS, **options)
        return out / "datalist.json"

    def _save_plan(self) -> None:
        write_json_atomic(self.plan_path, self.plan, indent=1)

    # ---- budget -> epochs from an idle 2-epoch calibration run of each training configuration
    def epochs_for(self, name: str) -> int:
        if self.args.epochs:
            return self.args.epochs
        name = ROWS[name].same_cost_as or name
        if name not in self.plan:
            row, calib = ROWS[name], self.root / "calibration" / name
            print(f"[recipe] {name}: 2-epoch calibration run (keep the machine idle) ...", flush=True)
            if row.kind == "reference":
                self.train_reference(calib, epochs=2, seed=0)
                history = pd.read_csv(calib / "history.csv")
                seconds = float(history["epoch_seconds"].iloc[-1])
            else:
                self.train_bundle(name, calib, {"epochs": 2, "use_mlflow": False}, seed=0)
                last = pd.read_csv(calib / "history.csv").iloc[-1]
                seconds = float(last["epoch_seconds"]) + float(last.get("val_seconds", 0.0))
            self.plan[name] = {"epoch_seconds": round(seconds, 2)}
            self._save_plan()
        return max(1, math.floor(self.args.budget_minutes * 60 / self.plan[name]["epoch_seconds"]))

    # ---- training
    def train_reference(self, run_dir: Path, epochs: int | None, seed: int) -> None:
        cmd = [sys.executable, str(REPO / "benchmarks" / "reference.py"), "--datalist", str(self.datalist),
               "--output", str(run_dir), "--seed", str(seed)]
        cmd += ["--epochs", str(epochs)] if epochs else ["--budget-minutes", str(self.args.budget_minutes)]
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "log_train.txt", "w") as log:
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"reference training failed: see {run_dir / 'log_train.txt'}")

    def bundle_overrides(self, name: str, run_dir: Path, seed: int) -> dict[str, Any]:
        common = {"datalist": str(self.datalist), "fold": VAL_FOLD, "output_dir": str(run_dir), "seed": seed,
                  "tracking_uri": self.tracking_uri, "experiment_name": f"{EXPERIMENT}_{self.split}",
                  "run_name": f"{name}_seed{seed}"}
        if ROWS[name].kind == "reference":  # the reference's own network, size and post-processing
            return {**common, "preset": "segresnet_shared", "resize_mode": "area", **PLAIN_POST}
        return {**common, **self.args.override, **ROWS[name].train}

    def train_bundle(self, name: str, run_dir: Path, extra: dict[str, Any], seed: int) -> None:
        run_bundle(BUNDLE, "training", {**self.bundle_overrides(name, run_dir, seed), **extra},
                   log_file=run_dir / "log_train.txt")

    def member_dirs(self, name: str, seed: int) -> list[Path]:
        """A row's run folders: its own (validation fold 0) and, for a fold ensemble, one per other member."""
        run_dir = self.root / "runs" / f"{name}_seed{seed}"
        return [run_dir, *(run_dir.with_name(f"{run_dir.name}_member{k}") for k in range(1, ROWS[name].members))]

    def train(self, name: str, seed: int) -> Path:
        run_dir = self.root / "runs" / f"{name}_seed{seed}"
        done = run_dir / "done.json"
        if done.exists():
            check_reusable(name, run_dir, self.args.override)
            return run_dir
        row = ROWS[name]
        wall = self.args.budget_mode == "wall"
        epochs = None if wall else self.epochs_for(name)
        print(f"[recipe] split {self.split} {name} seed {seed}: training "
              f"{f'{self.args.budget_minutes} min' if wall else f'{epochs} epochs'}"
              f"{f' shared by {row.members} runs' if row.members > 1 and not row.budget_per_member else ''} ...",
              flush=True)
        start = time.perf_counter()
        if row.kind == "reference":
            self.train_reference(run_dir, epochs, seed)
        else:
            share = 1 if row.budget_per_member else row.members
            extra = ({"budget_minutes": self.args.budget_minutes / share} if wall
                     else {"epochs": max(1, epochs // share)})
            # the other members first, each marked finished: the row's own folder (fold 0) finishes the row
            for fold, member in reversed(list(enumerate(self.member_dirs(name, seed)))):
                if not (member / "done.json").exists():
                    # only a fold ensemble's members get a fold: any other row keeps its own (e.g. --fold all)
                    own = {"fold": fold, "run_name": member.name} if row.members > 1 else {}
                    self.train_bundle(name, member, {**extra, **own}, seed)
                    if member != run_dir:
                        write_json_atomic(member / "done.json", {"fold": fold}, indent=1)
        history = pd.read_csv(run_dir / "history.csv")
        n = self.n_all if trains_on_all(name) else self.n_train
        # the median epoch: robust to an epoch slowed by another job on the machine
        record = {"epochs": int(history["epoch"].max()), "train_wall_seconds": round(time.perf_counter() - start),
                  "train_images_per_second": round(n / float(history["epoch_seconds"].median()), 1)}
        if row.kind != "reference":
            record["config"] = row_config(name, self.args.override)   # what check_reusable compares
        write_json_atomic(done, record, indent=1)   # done.json marks the run finished: never half-written
        return run_dir

    # ---- evaluation
    def evaluate(self, name: str, seed: int, split: str = "test") -> Path:
        row = ROWS[name]
        base = trained_row(name)
        run_dir = self.root / "runs" / f"{base}_seed{seed}"
        eval_dir = run_dir / (f"eval_{split}" if row.kind != "variant" else f"eval_{split}_{name}")
        if (eval_dir / "summary.json").exists():
            return eval_dir
        if split == "test" and ROWS[base].kind == "bundle" and validated(base):
            self.backfill_operating_point(base, seed, run_dir)
        overrides = {**self.bundle_overrides(base, run_dir, seed), **row.eval}
        if ROWS[base].members > 1:   # a fold ensemble: the other members averaged in
            members = self.member_dirs(base, seed)[1:]
            overrides["ensemble_checkpoints"] = [str(member / "models" / "model.pt") for member in members]
        overrides.update({"split": split, "eval_dir": str(eval_dir), "run_name": f"{name}_seed{seed}",
                          "n_bootstrap": 1000 if split == "test" else 0})
        print(f"[recipe] split {self.split} {name} seed {seed}: evaluating ({split}) ...", flush=True)
        run_bundle(BUNDLE, "evaluating", overrides, log_file=eval_dir.parent / f"log_{eval_dir.name}.txt")
        return eval_dir

    def backfill_operating_point(self, name: str, seed: int, run_dir: Path) -> None:
        """A run trained before training chose its operating threshold (``models/operating_point.json``) gets the one
        training would have chosen: Youden's J on the validation fold's class probabilities of ``model.pt``, read
        from its validation evaluation (the same network input and TTA as training's validation)."""
        path = run_dir / "models" / OPERATING_POINT
        if path.exists():
            return
        frame = pd.read_csv(self.evaluate(name, seed, "val") / "per_image.csv")
        positive = json.loads((run_dir / "run_config.json").read_text())["classes"][-1]
        write_operating_point(run_dir / "models", positive, frame[f"prob_{positive}"].to_numpy(),
                              (frame["true_class"] == positive).to_numpy(),
                              note="chosen by benchmarks/recipe.py from the validation evaluation of model.pt (the "
                                   "run was trained before training chose it)")

    def inference_ms(self, name: str) -> float:
        """Eval-mode forward time per image of the network the row trains, at its input size (twice for flip TTA,
        once per member of a fold ensemble). A row that changes its preset's network or input size (its own or
        ``--override``'s ``network_kwargs``, ``image_size``, ...) is timed with the change, under its own plan key."""
        base = ROWS[trained_row(name)]
        plain = base.kind == "reference"
        preset, network, size = timed_network(name, self.args.override)
        key = inference_key(preset, network, size)
        if key not in self.plan:
            self.plan[key] = round(bench.inference_ms_per_image(network, size=size), 2)
            self._save_plan()
        tta = {**(PLAIN_POST if plain else {}), **ROWS[name].eval}.get("flip_tta", True)
        return self.plan[key] * (2 if tta else 1) * base.members

    def idle_images_per_second(self, name: str) -> float | None:
        """Training images per second of the row's idle calibration (validation time included): the throughput
        figure, since the training runs themselves may share the machine (their epochs are fixed, their speed not)."""
        key = ROWS[trained_row(name)].same_cost_as or trained_row(name)
        calibration = self.plan.get(key)
        if not calibration:
            return None
        n = self.n_all if trains_on_all(key) else self.n_train
        return round(n / calibration["epoch_seconds"], 1)

    def calibrate(self) -> dict[str, int]:
        """Every trained row's epochs in the budget, calibrating the rows ``plan.json`` does not hold yet."""
        return {name: self.owner(name).epochs_for(name) for name in self.args.rows if ROWS[name].kind != "variant"}

    # ---- one split
    def run(self) -> list[dict[str, Any]]:
        records = []
        if self.args.budget_mode == "epochs":  # every calibration first, while the machine is still idle
            self.calibrate()
        for seed in self.args.seeds:
            for name in self.args.rows:
                row = ROWS[name]
                if row.kind != "variant":
                    self.owner(name).train(name, seed)
                for split in ("test", "val") if validated(name) else ("test",):
                    self.owner(name).evaluate(name, seed, split)
        for seed in self.args.seeds:
            ref_dir = self.reference_source.root / "runs" / f"reference_seed{seed}" / "eval_test"
            for name in self.args.rows:
                owner = self.owner(name)
                eval_dir = owner.evaluate(name, seed, "test")
                base_dir = eval_dir.parent
                done = json.loads((base_dir / "done.json").read_text())
                done.pop("config", None)   # what the run trained (check_reusable), not a figure
                record = {"network": name, "seed": seed, "note": ROWS[name].note, **done,
                          "idle_images_per_second": owner.idle_images_per_second(name),
                          **bench.read_summary(eval_dir),
                          "ece": json.loads((eval_dir / "summary.json").read_text())["classification"].get("ece"),
                          "inference_ms": round(owner.inference_ms(name), 1)}
                val = owner.evaluate(name, seed, "val") if validated(name) else None
                if val is not None:
                    v = bench.read_summary(val)
                    record["val_dice"], record["val_auc"] = round(v["dice"]["mean"], 3), round(v["auc"]["mean"], 3)
                if name != "reference" and ref_dir.exists():
                    diff = bench.paired_bootstrap(eval_dir / "per_image.csv", ref_dir / "per_image.csv")
                    record["vs_ref_dice"] = f"{diff['dice']['diff']:+.3f} ({diff['dice']['lo']:+.3f} to " \
                                            f"{diff['dice']['hi']:+.3f})"
                    record["vs_ref_auc"] = f"{diff['auc']['diff']:+.3f} ({diff['auc']['lo']:+.3f} to " \
                                           f"{diff['auc']['hi']:+.3f})"
                records.append(single_task_blanked(record, base_dir))
        return records


def single_task_blanked(record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A single-task baseline's other head is a constant (AUC 0.5, or an empty mask): its metrics and columns are
    left out of the record, so that neither the table (where they print as "-"), the CSV nor the MLflow parent run
    reads them as a score. The reference writes no ``run_config.json``: it learns both tasks."""
    config = run_dir / "run_config.json"
    if not config.exists():
        return record
    network_name = json.loads(config.read_text())["network_name"]
    tasks = network_info(network_name).tasks
    columns = {"seg": (*bench.SEG_METRICS, "vs_ref_dice", "val_dice"),
               "cls": (*bench.CLS_METRICS, "vs_ref_auc", "val_auc", "ece")}
    missing = {key for task, keys in columns.items() if task not in tasks for key in keys}
    return {"network_name": network_name, **{k: v for k, v in record.items() if k not in missing}}


def portable(argv: list[str], root: Path) -> list[str]:
    """The command line as a user runs it from the repository (the report's folder): absolute paths relative to it,
    so BENCHMARKS.md does not carry this machine's folders."""
    out = []
    for arg in argv:
        path = Path(arg)
        out.append(os.path.relpath(path, root) if path.is_absolute() else arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "BUSBRA")
    parser.add_argument("--output", type=Path, default=Path("runs/recipe"))
    parser.add_argument("--split", choices=sorted(SPLITS), default="A")
    parser.add_argument("--budget-minutes", type=float, default=20.0)
    parser.add_argument("--budget-mode", choices=["epochs", "wall"], default="epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--datalist", type=Path, default=None,
                        help="a prepared datalist with a test section and a fold 0 (instead of preparing --data)")
    parser.add_argument("--epochs", type=int, default=None, help="fixed epochs for every row (no calibration)")
    parser.add_argument("--calibrate-only", action="store_true",
                        help="run the rows' idle calibrations (plan.json) and stop: a long queue of rows then trains "
                        "with its epochs fixed, and the machine need not stay idle while it does")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="bundle value for every bundle row (YAML value), e.g. image_size=[64,64]")
    parser.add_argument("--report", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown file to update")
    parser.add_argument("--section", default=None,
                        help="the Markdown section (and results_<section>.csv) to write (default: recipe_<split>), "
                        "e.g. a seeds table beside the one-seed ablations")
    parser.add_argument("--rows", nargs="+", default=["reference", "default", "default_no_tta", "default_no_cleaning",
                                                      "default_plain_post"], choices=sorted(ROWS))
    args = parser.parse_args(argv)
    try:
        args.override = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.override)}
    except ValueError:
        parser.error("--override takes KEY=VALUE")
    missing = {ROWS[n].base for n in args.rows if ROWS[n].base} - set(args.rows)
    if missing:
        parser.error(f"--rows: variants need their trained row too: add {', '.join(sorted(missing))}")
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/recipe.py " + " ".join(portable(given, Path(args.report).resolve().parent))
    if args.calibrate_only and (args.epochs or args.budget_mode != "epochs"):
        parser.error("--calibrate-only: the calibrations are for --budget-mode epochs without --epochs")
    b = RecipeBenchmark(args)
    if args.calibrate_only:
        b.calibrate()
        print(json.dumps(b.plan, indent=1))
        return 0
    records = b.run()
    frame = records_frame(records)
    section = args.section or f"recipe_{args.split}"
    csv_path = b.output / (f"results_{args.split}.csv" if args.section is None else f"results_{section}.csv")
    write_csv_atomic(csv_path, frame, index=False)
    text = report(records, title=SPLITS[args.split]["title"], command=command, started=started,
                  budget_minutes=args.budget_minutes, budget_mode=args.budget_mode, rows=args.rows, seeds=args.seeds,
                  per_image=lambda name, seed: b.owner(name).evaluate(name, seed, "test") / "per_image.csv")
    print(text)
    bench.replace_section(args.report, section, text)
    log_parent(b, {"split": args.split, "budget_minutes": args.budget_minutes, "size": 128,
                   "budget_mode": args.budget_mode, "commit": bench.git_commit(REPO)},
               [{**r, "fold": f"{args.split}.seed{r['seed']}"} for r in records], [csv_path],
               experiment=f"{EXPERIMENT}_{args.split}", name=f"recipe_{args.split}_{args.budget_minutes}min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
