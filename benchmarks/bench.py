"""Building blocks of the real-data benchmark (``benchmarks/busbra.py``): equal-budget planning, shifted test sets,
speed figures, paired comparisons and the Markdown tables of ``BENCHMARKS.md``.

Training and evaluation themselves are the bundles' (``pipeline.workflows.run_bundle``); this module only plans the
runs and reads what the bundles wrote (``eval_<split>/summary.json`` and ``per_image.csv``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from pipeline.atomic import atomic_path, write_json_atomic, write_text_atomic
from pipeline.data.datalist import load_datalist, split_items
from pipeline.keys import Head
from pipeline.losses import MultiTaskLoss
from pipeline.metrics import REPORTED_CLASSIFICATION_METRICS, finite_or_none
from pipeline.presets import load_preset
from pipeline.registry import create_network, network_info
from pipeline.tracking import git_commit

__all__ = [
    "SHIFTS",
    "REPORTED_METRICS",
    "build_preset_network",
    "build_preset_loss",
    "train_images_per_second",
    "bf16_train_images_per_second",
    "inference_ms_per_image",
    "plan_epochs",
    "shift_image",
    "write_shifted_datalist",
    "read_summary",
    "paired_bootstrap",
    "paired_bootstrap_seeds",
    "markdown_results",
    "replace_section",
    "git_commit",
    "hardware_summary",
]

SEG_METRICS = ("dice", "jaccard", "hd95")
CLS_METRICS = REPORTED_CLASSIFICATION_METRICS
REPORTED_METRICS = SEG_METRICS + CLS_METRICS

# Synthetic scanner shifts of the test images, applied to the original 8-bit PNGs. Linear brightness/contrast
# changes are undone by the bundles' percentile normalisation, so the shifts are non-linear:
# * gain: a different gain curve (gamma 0.6, brighter mid-tones) and depth attenuation (time-gain compensation of
#   another scanner: the deepest row at 60 % of the top row's brightness);
# * speckle: stronger multiplicative speckle (gamma-distributed, std 0.35) seen through a wider point-spread
#   function (Gaussian blur, sigma 1 px).
SHIFTS = ("gain", "speckle")


def _config(preset: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    return load_preset(preset) if isinstance(preset, (str, os.PathLike)) else dict(preset)


def _in_channels(config: Mapping[str, Any]) -> int:
    """Image plus the preset's extra input channels, as the bundles count them."""
    return 1 + len(config.get("extra_input_channels", []))


def build_preset_network(preset: str | os.PathLike | Mapping[str, Any], num_classes: int = 2) -> torch.nn.Module:
    """The network of a preset as the bundles build it (extra input channels, circle training wrapper included)."""
    from pipeline.engines import circle_training

    config = _config(preset)
    kwargs = {**config["network_kwargs"], "in_channels": _in_channels(config), "num_classes": num_classes}
    net = create_network(config["network_name"], **kwargs)
    return circle_training(net) if config.get("circle_training") else net


def build_preset_loss(preset: str | os.PathLike | Mapping[str, Any]) -> MultiTaskLoss:
    """The joint loss of a preset as the bundles build it (its ``seg_loss``/``cls_loss`` entries instantiated by
    MONAI's config parser, no class weights)."""
    from monai.bundle import ConfigParser

    config = _config(preset)
    parser = ConfigParser({**config, "class_weight_tensor": None})
    return MultiTaskLoss(parser.get_parsed_content("seg_loss"), parser.get_parsed_content("cls_loss"),
                         config["seg_weight"], config["cls_weight"], config["aux_weights"])


def _train_step(preset: str, size: int, batch: int, seed: int, channels_last: bool, bf16: bool):
    """A timed training step of a preset's network (forward, joint loss, backward, AdamW step) on random
    ``(batch, 1, size, size)`` data, as a function returning its seconds; ``channels_last`` and ``bf16`` (the
    forward pass under CPU bfloat16 autocast, ``pipeline.engines.AutocastInferer``) as the bundles set them."""
    from pipeline.engines import AutocastInferer

    config = _config(preset)
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = build_preset_network(config).train().to(memory_format=memory_format)
    forward = AutocastInferer(enabled=bf16)
    loss_fn = build_preset_loss(config)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(batch, _in_channels(config), size, size).contiguous(memory_format=memory_format)
    target = {Head.SEG.value: (torch.rand(batch, 1, size, size) > 0.8).float(),
              Head.CLS.value: torch.randint(0, 2, (batch,))}

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn(forward(x, net), target).backward()
        opt.step()
        return time.perf_counter() - start

    return step


def train_images_per_second(preset: str, size: int = 128, batch: int = 16, steps: int = 3, seed: int = 0,
                            channels_last: bool = False, bf16: bool = False) -> float:
    """Training throughput of a preset's network in a plain PyTorch loop (:func:`_train_step`): images per second,
    median of ``steps`` steps after one warm-up."""
    step = _train_step(preset, size, batch, seed, channels_last, bf16)
    step()   # the first step warms up allocators and kernels
    return batch / statistics.median(step() for _ in range(steps))


def bf16_train_images_per_second(preset: str, size: int = 128, batch: int = 16, rounds: int = 6,
                                 steps_per_round: int = 4, seed: int = 0) -> tuple[float, float]:
    """Training throughput (images per second, median step) in float32 and with CPU bfloat16 autocast, channels_last,
    the two measured in alternating rounds of ``steps_per_round`` steps, so that a slower spell of a shared machine
    falls on both; the first two steps of each network are warm-up."""
    steps = {bf16: _train_step(preset, size, batch, seed, True, bf16) for bf16 in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for bf16, step in steps.items():
            for i in range(steps_per_round):
                seconds = step()
                if r or i > 1:
                    times[bf16].append(seconds)
    return batch / statistics.median(times[False]), batch / statistics.median(times[True])


@torch.no_grad()
def inference_ms_per_image(preset: str | os.PathLike | Mapping[str, Any], size: int | Sequence[int] = 128,
                           repeats: int = 10) -> float:
    """Eval-mode forward time of a preset's network (or of a config holding ``network_name``, ``network_kwargs``,
    ...) on one ``(1, 1, H, W)`` image (``size``: H = W, or (H, W)), median ms."""
    config = _config(preset)
    net = build_preset_network(config).eval()
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.rand(1, _in_channels(config), height, width)
    net(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def plan_epochs(images_per_second: float, n_train: int, budget_seconds: float) -> int:
    """Epochs that fit a wall-clock training budget at a measured throughput (at least 1).

    Raises:
        ValueError: a non-positive argument.
    """
    for name, value in (("images_per_second", images_per_second), ("n_train", n_train),
                        ("budget_seconds", budget_seconds)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    return max(1, int(round(budget_seconds * images_per_second / n_train)))


def shift_image(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Apply a synthetic scanner shift (see ``SHIFTS``) to an 8-bit grey ``(H, W)`` image; returns uint8.

    Raises:
        ValueError: unknown ``kind`` or an image that is not 2D.
    """
    if image.ndim != 2:
        raise ValueError(f"shift_image expects a grey (H, W) image, got shape {image.shape}")
    x = image.astype(np.float64) / 255.0
    if kind == "gain":
        depth = np.linspace(1.0, 0.6, x.shape[0])[:, None]
        x = np.power(x, 0.6) * depth
    elif kind == "speckle":
        shape = 1.0 / 0.35**2  # gamma(k, 1/k) has mean 1 and std 1/sqrt(k)
        x = gaussian_filter(x * rng.gamma(shape, 1.0 / shape, size=x.shape), sigma=1.0)
    else:
        raise ValueError(f"shift kind must be one of {SHIFTS}, got {kind!r}")
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def write_shifted_datalist(
    datalist: str | os.PathLike, fold: int, output_dir: str | os.PathLike, kind: str, seed: int = 0
) -> Path:
    """Write the ``fold`` test images of ``datalist`` with shift ``kind`` into ``output_dir`` and a datalist for them
    (same masks, labels, groups and fold), so the bundle's evaluation runs on them unchanged.

    Returns:
        the path of the new ``datalist.json``.
    """
    output = Path(output_dir)
    (output / "images").mkdir(parents=True, exist_ok=True)
    source = load_datalist(datalist)
    rng = np.random.default_rng(seed)
    items = []
    for item in split_items(datalist, fold, "val"):
        with Image.open(item["image"]) as img:
            grey = np.asarray(img.convert("L"))
        name = Path(item["image"]).name
        with atomic_path(output / "images" / name, fsync=False) as tmp:  # bulk output: atomic, no flush per file
            Image.fromarray(shift_image(grey, kind, rng)).save(tmp)
        items.append({**item, "image": f"images/{name}", "source": f"{item.get('source', '')}+{kind}"})
    shifted = {key: value for key, value in source.items() if key not in ("training", "test")}
    shifted.update({"training": items, "test": [],
                    "description": f"{source.get('description', '')} fold {fold} test images with shift {kind!r}"})
    path = output / "datalist.json"
    write_json_atomic(path, shifted, indent=1, default=None)
    return path


def _float(value: Any) -> float:
    """A summary value for a table: NaN where the bundle reports nothing."""
    number = finite_or_none(value)
    return float("nan") if number is None else number


def read_summary(eval_dir: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "lo", "hi"}}`` from a bundle evaluation's ``summary.json``; NaN where the bundle reports
    nothing (no CI without bootstrap; no HD95 when no image has both a true and a predicted lesion)."""
    summary = json.loads((Path(eval_dir) / "summary.json").read_text())
    out: dict[str, dict[str, float]] = {}
    for metric in SEG_METRICS:
        entry = summary["segmentation"][metric]
        lo, hi = entry.get("ci95") or (None, None)
        out[metric] = {"mean": _float(entry.get("mean")), "lo": _float(lo), "hi": _float(hi)}
    cls = summary["classification"]
    for metric in CLS_METRICS:
        lo, hi = cls.get("ci95", {}).get(metric) or (None, None)
        out[metric] = {"mean": _float(cls.get(metric)), "lo": _float(lo), "hi": _float(hi)}
    return out


def paired_bootstrap(
    per_image_a: str | os.PathLike | pd.DataFrame, per_image_b: str | os.PathLike | pd.DataFrame,
    positive_class: str = "malignant", n_resamples: int = 1000, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of the differences a - b in mean Dice and in malignant AUC on the same test images.

    Both tables are bundle ``per_image.csv`` files (or frames) of the same images; images are resampled with
    replacement, once per resample for both networks, so the interval accounts for the pairing.

    Returns:
        ``{"dice": {...}, "auc": {...}}`` each with ``diff``, ``lo``, ``hi`` (95 % percentile interval) and ``p``
        (two-sided bootstrap p-value: twice the smaller share of resampled differences on either side of 0).

    Raises:
        ValueError: the two tables do not hold the same images.
    """
    return paired_bootstrap_seeds([(per_image_a, per_image_b)], positive_class, n_resamples, seed)


def paired_bootstrap_seeds(
    pairs: Sequence[tuple[str | os.PathLike | pd.DataFrame, str | os.PathLike | pd.DataFrame]],
    positive_class: str = "malignant", n_resamples: int = 1000, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``paired_bootstrap`` of the difference a - b averaged over several seeds (one ``(a, b)`` pair per seed).

    Every table holds the same test images; each resample draws the images once and uses that draw for every pair,
    so the interval covers the test set's sampling, and the seeds' spread enters through their average.

    Raises:
        ValueError: no pair, or the tables do not all hold the same images.
    """
    if not pairs:
        raise ValueError("paired_bootstrap: no pair of per-image tables given")
    frames = [tuple(t if isinstance(t, pd.DataFrame) else pd.read_csv(t) for t in pair) for pair in pairs]
    ids = frames[0][0]["id"]
    for a, b in frames:
        for t in (a, b):
            if set(t["id"]) != set(ids) or len(t) != len(ids):
                raise ValueError("paired_bootstrap: the per-image tables must all hold the same images")
    aligned = [tuple(t.set_index("id").loc[ids].reset_index() for t in pair) for pair in frames]
    truth = (aligned[0][0]["true_class"] == positive_class).to_numpy()
    prob_key = f"prob_{positive_class}"
    dice = [(a["dice"].to_numpy(float), b["dice"].to_numpy(float)) for a, b in aligned]
    prob = [(a[prob_key].to_numpy(float), b[prob_key].to_numpy(float)) for a, b in aligned]

    def differences(idx: np.ndarray) -> tuple[float, float]:
        d = np.mean([da[idx].mean() - db[idx].mean() for da, db in dice])
        auc = np.mean([roc_auc_score(truth[idx], pa[idx]) - roc_auc_score(truth[idx], pb[idx]) for pa, pb in prob])
        return float(d), float(auc)

    rng = np.random.default_rng(seed)
    n = len(ids)
    diffs: dict[str, list[float]] = {"dice": [], "auc": []}
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        if truth[idx].all() or not truth[idx].any():
            diffs["dice"].append(float(np.mean([da[idx].mean() - db[idx].mean() for da, db in dice])))
            continue  # AUC is undefined on a one-class resample
        d, auc = differences(idx)
        diffs["dice"].append(d)
        diffs["auc"].append(auc)
    point = dict(zip(("dice", "auc"), differences(np.arange(n))))
    out = {}
    for key, values in diffs.items():
        v = np.asarray(values)
        p = min(1.0, 2 * min((v <= 0).mean(), (v >= 0).mean()))
        out[key] = {"diff": point[key], "lo": float(np.percentile(v, 2.5)), "hi": float(np.percentile(v, 97.5)),
                    "p": float(p)}
    return out


def _cell(values: Mapping[str, float], digits: int = 3, ci: bool = True) -> str:
    mean = values["mean"]
    if ci and not np.isnan(values.get("lo", np.nan)):
        return f"{mean:.{digits}f} ({values['lo']:.{digits}f}-{values['hi']:.{digits}f})"
    if "std" in values and not np.isnan(values["std"]):
        return f"{mean:.{digits}f} ± {values['std']:.{digits}f}"
    return f"{mean:.{digits}f}"


def markdown_results(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = REPORTED_METRICS,
                     extra: Sequence[tuple[str, str]] = ()) -> str:
    """A Markdown table, one row per network; each ``row`` has ``network`` and, per metric, a dict with ``mean`` and
    either ``lo``/``hi`` (a CI, printed in brackets) or ``std`` (printed as ±). Metrics of a task the network does
    not learn (``network_info(...).tasks``) are printed as "-". ``extra``: ``(column title, row key)`` pairs appended
    as plain values."""
    header = ["network", *metrics, *[title for title, _ in extra]]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        tasks = network_info(row["network_name"]).tasks if "network_name" in row else ("seg", "cls")
        cells = [str(row["network"])]
        for metric in metrics:
            task = "seg" if metric in SEG_METRICS else "cls"
            value = row.get(metric)
            if task not in tasks or value is None:
                cells.append("-")
            else:
                cells.append(_cell(value, digits=1 if metric == "hd95" else 3))
        cells += [str(row.get(key, "")) for _, key in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_section(path: str | os.PathLike, name: str, text: str) -> None:
    """Put ``text`` between the ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers of a Markdown file,
    appending the marked section when the file or the markers do not exist yet; the rest of the file is kept."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    content = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        content = (content.rstrip() + "\n\n" if content.strip() else "") + block + "\n"
    write_text_atomic(path, content)  # a kill mid-write must not truncate the rest of the document


def hardware_summary() -> str:
    """CPU model, logical CPUs, torch version and threads (and the GPU when there is one), for benchmark reports."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text
