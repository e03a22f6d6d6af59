"""Training speed of the US bundle: engine overhead, CPU knobs at 128², 256², 512², and peak memory.

    python benchmarks/throughput.py                 # everything, into BENCHMARKS.md (section "throughput")
    python benchmarks/throughput.py --sizes 128     # one size

Every figure comes from the bundle's own trainer (``configs/common.yaml`` + ``configs/train.yaml`` through MONAI's
``ConfigWorkflow``) on synthetic ultrasound images the project generates, each configuration in a fresh process
(so peak RSS is that configuration's). Throughput = images / seconds over every epoch after the first (warm-up),
handlers included (checkpoints, history, progress bar); validation and MLflow are off.

1. Engine overhead (one process, one size): the bundle's ``SupervisedTrainer`` vs a plain PyTorch loop (same
   network and seed, same AdamW, loss and batch, batches pre-collated in memory), both without augmentation;
   reported as bundle img/s / plain img/s (target >= 0.97), medians of 3 bundle passes alternating with 4 plain ones.
   The bundle with its augmentation is reported beside it.
2. CPU knobs: "MONAI defaults" (``Dataset`` that reads and pre-processes every image every epoch, MetaTensors into
   the network, PyTorch's default threads) vs "tuned" (this bundle's defaults: ``CacheDataset`` of the deterministic
   pre-processing, plain tensors into the network, one thread per core), train img/s and peak RSS at each size.
   AMP is the CUDA knob (off on CPU; on CUDA the tuned configuration sets ``--amp true``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUNDLE = REPO / "bundles" / "breast_us_mtl"
BATCH = {128: 16, 256: 16, 512: 4}
OVERHEAD_ROUNDS = 3  # bundle passes, each between two plain-loop passes
# "MONAI defaults": what a bundle gets without our choices; "tuned": this bundle's defaults (channels_last stays
# off: it measured slower for this network at 128² and 512² on the 2-core CPU, see BENCHMARKS.md)
CONFIGS = {
    "monai_defaults": {"cache_rate": 0.0, "channels_last": False, "prepare_batch#keep_meta": True},
    "tuned": {"cache_rate": 1.0, "channels_last": False, "prepare_batch#keep_meta": False},
}


def make_data(root: Path, size: int, n: int) -> Path:
    """Synthetic US images of ``size``² prepared into a datalist (cached under ``root``)."""
    from pipeline.data.prepare import prepare
    from pipeline.data.synthetic import make_us_dataset

    out = root / f"us{size}_{n}"
    if not (out / "prepared" / "datalist.json").exists():
        make_us_dataset(out / "raw", n=n, seed=0, size=(size, size))
        prepare("busi", out / "raw" / "Dataset_BUSI_with_GT", out / "prepared")
    return out / "prepared" / "datalist.json"


def _workflow(datalist: Path, output: Path, size: int, epochs: int, overrides: dict[str, Any]):
    from monai.bundle import ConfigWorkflow

    configs = BUNDLE / "configs"
    wf = ConfigWorkflow(
        config_file=[str(configs / "common.yaml"), str(configs / "train.yaml")],
        meta_file=str(configs / "metadata.json"), workflow_type="train", run_id="training",
        **{"bundle_root": str(BUNDLE), "datalist": str(datalist), "output_dir": str(output), "epochs": epochs,
           "val_interval": epochs + 1, "use_mlflow": False, "image_size": [size, size], "batch_size": BATCH[size],
           "resume": False, "seed": 0, **overrides},
    )
    wf.initialize()
    return wf


def _timed_run(wf) -> dict[str, float]:
    """Run the workflow's trainer; over every epoch after the first: images per second with everything (``ips``),
    images per second of the iterations alone (``iteration_ips``: Ignite's epoch time, which ends before the
    EPOCH_COMPLETED handlers run) and the seconds per epoch spent in per-epoch handlers (``epoch_handler_s``:
    checkpoint, history and learning curves, seeding)."""
    from ignite.engine import Events

    trainer = wf.parser.get_parsed_content("train#trainer")
    marks: dict[str, float] = {"iteration_s": 0.0}

    def start(engine):
        if engine.state.epoch == 2:
            marks["t0"], marks["i0"] = time.perf_counter(), engine.state.iteration

    def epoch_done(engine):
        if engine.state.epoch >= 2:
            marks["iteration_s"] += engine.state.times["EPOCH_COMPLETED"]

    def done(engine):
        marks["t1"], marks["i1"] = time.perf_counter(), engine.state.iteration

    trainer.add_event_handler(Events.EPOCH_STARTED, start)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_done)
    trainer.add_event_handler(Events.COMPLETED, done)
    wf.run()
    wf.finalize()
    images = (marks["i1"] - marks["i0"]) * wf.parser.get_parsed_content("batch_size")
    wall = marks["t1"] - marks["t0"]
    epochs = trainer.state.max_epochs - 1
    return {"ips": images / wall, "iteration_ips": images / marks["iteration_s"],
            "epoch_handler_s": (wall - marks["iteration_s"]) / epochs,
            "iterations_per_epoch": trainer.state.epoch_length}


def _plain_loop(wf, iterations: int, repeats: int) -> float:
    """Plain PyTorch training on pre-collated batches in memory: the same network (fresh, same seed), optimizer
    settings, loss and batch as the bundle; images per second (best of ``repeats`` timed passes after a warm-up)."""
    import torch
    from monai.data import list_data_collate

    from pipeline.registry import create_network

    p = wf.parser.get_parsed_content
    torch.manual_seed(0)
    net = create_network(p("network_name"), **{**p("network_kwargs"), "in_channels": p("in_channels"),
                                               "num_classes": p("num_classes")}).to(p("device"))
    if p("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=p("learning_rate"), weight_decay=p("weight_decay"))
    loss_fn, prepare_batch = p("loss"), p("prepare_batch")
    dataset, batch = p("train#dataset"), p("batch_size")
    n = len(dataset) // batch
    batches = [prepare_batch(list_data_collate([dataset[i * batch + j] for j in range(batch)]), p("device"))
               for i in range(n)]

    def one_pass(count: int) -> float:
        start = time.perf_counter()
        for k in range(count):
            x, target = batches[k % n]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), target).backward()
            opt.step()
        return count * batch / (time.perf_counter() - start)

    one_pass(iterations)  # warm-up as long as the bundle's (its first epoch is not timed either)
    return max(one_pass(iterations) for _ in range(repeats))


def measure_one(kind: str, size: int, datalist: Path, epochs: int) -> dict[str, Any]:
    """One configuration in this process: ``kind`` is a key of CONFIGS, or "overhead"."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "overhead":
            no_aug = {"train#augmentation": [], "cache_rate": 1.0}
            wf = _workflow(datalist, Path(tmp) / "a0", size, epochs, no_aug)
            iterations = (len(wf.parser.get_parsed_content("train#dataset")) // BATCH[size]) * (epochs - 1)
            # single passes differ by up to ~10 % here: plain and bundle passes alternate (a drift in the machine's
            # speed hits both) and the medians are compared
            plain_runs, bundle_runs = [_plain_loop(wf, iterations, repeats=1)], []
            for r in range(OVERHEAD_ROUNDS):
                wf = wf if r == 0 else _workflow(datalist, Path(tmp) / f"a{r}", size, epochs, no_aug)
                bundle_runs.append(_timed_run(wf))
                plain_runs.append(_plain_loop(wf, iterations, repeats=1))
            plain = statistics.median(plain_runs)
            bundle = {key: statistics.median(run[key] for run in bundle_runs) for key in bundle_runs[0]}
            augmented = _timed_run(_workflow(datalist, Path(tmp) / "b", size, epochs, {"cache_rate": 1.0}))
            # what each engine choice costs: MetaTensor inputs to the network (the behaviour before
            # MultiTaskPrepareBatch(keep_meta=False)), and MONAI's per-iteration decollation of batch and output
            variants = {"network input keeps MetaTensor metadata": {"prepare_batch#keep_meta": True},
                        "trainer decollate=False": {"train#trainer#decollate": False}}
            variant_ips = {name: _timed_run(_workflow(datalist, Path(tmp) / f"v{i}", size, epochs, {**no_aug, **v}))
                           for i, (name, v) in enumerate(variants.items())}
            # the per-epoch handlers cost a fixed time per epoch: project the ratio onto a BUS-BRA epoch
            busbra_iterations = 1500 // BATCH[size]
            busbra_epoch_s = busbra_iterations * BATCH[size] / bundle["iteration_ips"] + bundle["epoch_handler_s"]
            result = {"plain_ips": plain, "plain_ips_runs": plain_runs,
                      "bundle_ips_runs": [run["ips"] for run in bundle_runs], "bundle": bundle,
                      "bundle_augmented": augmented, "variants": variant_ips,
                      "overhead_ratio": bundle["ips"] / plain,
                      "iteration_overhead_ratio": bundle["iteration_ips"] / plain,
                      "busbra_epoch_overhead_ratio": busbra_iterations * BATCH[size] / busbra_epoch_s / plain}
        else:
            overrides = dict(CONFIGS[kind])
            if kind == "tuned":
                torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
                overrides["amp"] = torch.cuda.is_available()
            result = _timed_run(_workflow(datalist, Path(tmp) / "c", size, epochs, overrides))
    result.update({"kind": kind, "size": size, "batch": BATCH[size], "threads": torch.get_num_threads(),
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return result


def _child(kind: str, size: int, datalist: Path, epochs: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--sizes", str(size), "--datalist", str(datalist),
           "--epochs", str(epochs)]
    out = subprocess.run(cmd, text=True, capture_output=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _passes(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _report(results: dict[str, dict[str, Any]], sizes: list[int]) -> str:
    lines = []
    overhead = next((r for k, r in sorted(results.items()) if k.startswith("overhead_")), None)
    if overhead is not None:
        b = overhead["bundle"]
        lines += [
            f"**Engine overhead** ({overhead['command']}; commit {overhead['commit']}, {overhead['date']}) at "
            f"{overhead['size']}², batch {overhead['batch']}, no augmentation, data cached, "
            f"{b['iterations_per_epoch']} iterations per epoch:", "",
            "| loop | img/s | bundle / plain |", "|---|---:|---:|",
            f"| plain PyTorch (median of {len(overhead['plain_ips_runs'])} passes: "
            f"{_passes(overhead['plain_ips_runs'])}) | {overhead['plain_ips']:.2f} | 1 |",
            f"| bundle SupervisedTrainer, iterations only | {b['iteration_ips']:.2f} | "
            f"**{overhead['iteration_overhead_ratio']:.3f}** |",
            f"| bundle, with its per-epoch handlers ({b['epoch_handler_s']:.2f} s per epoch: checkpoint, history, "
            f"curves; median of {len(overhead['bundle_ips_runs'])} passes: {_passes(overhead['bundle_ips_runs'])}) | "
            f"{b['ips']:.2f} | {overhead['overhead_ratio']:.3f} |",
            f"| bundle projected on a BUS-BRA epoch (1,500 images) | | {overhead['busbra_epoch_overhead_ratio']:.3f} |",
            *[f"| bundle, {name} (iterations only) | {v['iteration_ips']:.2f} | "
              f"{v['iteration_ips'] / overhead['plain_ips']:.3f} |" for name, v in overhead["variants"].items()],
            f"| bundle with its augmentation (for reference) | {overhead['bundle_augmented']['ips']:.2f} | |", ""]
    knob_rows = []
    for size in sizes:
        base, tuned = results.get(f"monai_defaults_{size}"), results.get(f"tuned_{size}")
        if base and tuned:
            knob_rows.append(
                f"| {size}² | {base['batch']} | {base['ips']:.2f} | {tuned['ips']:.2f} | "
                f"{tuned['ips'] / base['ips']:.2f}x | {base['peak_rss_mb']:.0f} | {tuned['peak_rss_mb']:.0f} | "
                f"{tuned['commit']}, {tuned['date']} |")
    if knob_rows:
        command = next(r["command"] for k, r in results.items() if k.startswith("tuned_"))
        lines += [f"**CPU knobs** ({command}): MONAI defaults = `Dataset` (every image read and pre-processed every "
                  "epoch), MetaTensors into the network, PyTorch's default threads; tuned = this bundle's defaults: "
                  "`CacheDataset`, plain tensors into the network (`MultiTaskPrepareBatch(keep_meta=False)`), one "
                  "thread per core (AMP is the CUDA knob, off on CPU). Train img/s with augmentation, handlers "
                  "included; peak RSS of the training process.", "",
                  "| size | batch | MONAI defaults img/s | tuned img/s | speed-up | peak RSS defaults MB | "
                  "peak RSS tuned MB | commit, date |", "|---:|---:|---:|---:|---:|---:|---:|---|", *knob_rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], choices=sorted(BATCH))
    parser.add_argument("--only", nargs="+", default=["overhead", "knobs"], choices=["overhead", "knobs"],
                        help="what to measure now; the other results are kept from earlier calls")
    parser.add_argument("--images", type=int, default=None,
                        help="synthetic images per size (default: 240 at 128², 96 at 256², 24 at 512²)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement (the first is warm-up)")
    parser.add_argument("--data-root", default=str(REPO / "runs" / "throughput_data"))
    parser.add_argument("--results", default=str(REPO / "runs" / "throughput_results.json"),
                        help="JSON file of every measurement so far (the report is built from it)")
    parser.add_argument("--report", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--datalist", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_one(args.child, args.sizes[0], Path(args.datalist), args.epochs)))
        return 0

    from bench import git_commit, hardware_summary, replace_section
    from pipeline.atomic import write_json_atomic

    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    command = " ".join(["python benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])])
    stamp = {"commit": git_commit(), "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
             "hardware": hardware_summary(), "command": f"`{command}`"}
    default_images = {128: 240, 256: 96, 512: 24}
    kinds = (["overhead"] if "overhead" in args.only else []) + (list(CONFIGS) if "knobs" in args.only else [])
    for size in args.sizes:
        datalist = make_data(Path(args.data_root), size, args.images or default_images[size])
        for kind in kinds:
            if kind == "overhead" and size != min(args.sizes):
                continue
            results[f"{kind}_{size}"] = {**_child(kind, size, datalist, args.epochs), **stamp}
            print(json.dumps(results[f"{kind}_{size}"]), flush=True)
            results_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(results_path, results, indent=1)   # kept figure by figure: a kill loses one
    text = f"Hardware: {stamp['hardware']}. Network: the bundle default (`segresnet_effnet`), synthetic US images, " \
           f"{args.epochs} epochs per figure, the first not timed.\n\n" + _report(results, sorted(BATCH))
    replace_section(args.report, "throughput", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
