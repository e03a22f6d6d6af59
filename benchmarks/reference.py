"""The plain MONAI reference that the project's default must beat (issue 12): what a researcher writes in an afternoon.

MONAI's SegResNet (init_filters 16) with a linear head on the pooled bottleneck (the zoo's ``segresnet_shared``,
1,576,643 parameters), images squashed to 128x128, Dice+CE and CE 1:1, Adam 1e-3 (constant), batch 16, random
left-right flip and rotation (+/-15 degrees) and nothing else, the last epoch's weights. Tensors stay in memory and
the augmentation is batched with ``affine_grid`` (the reference's own speed, as it was measured), channels_last.

    python benchmarks/reference.py --datalist D/datalist.json --output runs/reference --budget-minutes 20
    python benchmarks/reference.py --datalist D/datalist.json --output runs/reference --epochs 16

It writes a run folder the bundle evaluates like any other (``models/model.pt``, ``run_config.json`` naming the
``segresnet_shared`` preset, ``history.csv``), so the reference is scored by the project's protocol:

    python -m monai.bundle run evaluating --config_file "['<bundle>/configs/common.yaml',
        '<bundle>/configs/evaluate.yaml','configs/segresnet_shared.yaml']" ... --output_dir runs/reference \
        --resize_mode area --split test

It trains on every item of the datalist's ``training`` section (``--exclude-fold k`` leaves fold k out, as the
bundle's validation does; the reference itself selects nothing, so by default it keeps it); the test section is
never read.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.transforms import Compose, EnsureTyped, LoadImaged, Resized, ScaleIntensityRangePercentilesd
from monai.utils import set_determinism
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.datalist import load_datalist, split_items  # noqa: E402
from pipeline.transforms import ToGreyd  # noqa: E402
from pipeline.presets import load_preset  # noqa: E402
from pipeline.registry import create_network  # noqa: E402
from pipeline.tracking import write_run_config  # noqa: E402

PRESET = "segresnet_shared"
SIZE = (128, 128)


def load_tensors(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N,1,H,W) in [0,1], masks (N,1,H,W) and labels (N,), with the bundle's deterministic preprocessing."""
    load = Compose([
        LoadImaged(keys=["image", "label"], reader="PILReader", reverse_indexing=False, image_only=True,
                   ensure_channel_first=True),
        ToGreyd(keys="image"),
        ScaleIntensityRangePercentilesd(keys="image", lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
        Resized(keys=["image", "label"], spatial_size=SIZE, mode=["area", "nearest"]),
        EnsureTyped(keys=["image", "label"], dtype=torch.float32, track_meta=False),
    ])
    images, masks = [], []
    for item in items:
        d = load({"image": item["image"], "label": item["label"]})
        images.append(d["image"])
        masks.append((d["label"] > 0).float())
    labels = torch.tensor([int(item["cls"]) for item in items])
    return torch.stack(images), torch.stack(masks), labels


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """Random left-right flip (p 0.5) and rotation within +/-15 degrees (p 0.5), one affine grid for the batch."""
    n = images.shape[0]
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    angle = torch.where(torch.rand(n, generator=generator) < 0.5,
                        (torch.rand(n, generator=generator) * 2 - 1) * math.radians(15), torch.zeros(n))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    stop = parser.add_mutually_exclusive_group(required=True)
    stop.add_argument("--epochs", type=int, help="train this many epochs")
    stop.add_argument("--budget-minutes", type=float, help="stop after the epoch that would exceed this budget")
    parser.add_argument("--exclude-fold", type=int, default=None, help="leave this training fold out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    set_determinism(seed=args.seed)
    datalist = load_datalist(args.datalist)
    items = split_items(args.datalist, args.exclude_fold, "train")
    preset = load_preset(PRESET)
    classes = datalist["classes"]
    t0 = time.perf_counter()
    images, masks, labels = load_tensors(items)
    print(f"loaded {len(items)} training images in {time.perf_counter() - t0:.0f} s", flush=True)

    net = create_network(PRESET, in_channels=1, num_classes=len(classes),
                         **preset["network_kwargs"]).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    seg_loss, cls_loss = DiceCELoss(sigmoid=True), torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(args.seed)
    batch, n = 16, len(items)
    history, train_seconds, epoch = [], 0.0, 0
    while True:
        start = time.perf_counter()
        net.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        steps = n // batch
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            x, y = augment(images[idx], masks[idx], generator)
            x = x.contiguous(memory_format=torch.channels_last)
            out = net(x)
            loss = seg_loss(out["seg"], y) + cls_loss(out["cls"], labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        seconds = time.perf_counter() - start
        train_seconds += seconds
        epoch += 1
        history.append({"epoch": epoch, "train_loss": total / steps, "epoch_seconds": round(seconds, 2),
                        "images_per_second": round(steps * batch / seconds, 2)})
        print(f"epoch {epoch}: loss {total / steps:.4f}, {seconds:.0f} s ({steps * batch / seconds:.1f} img/s)",
              flush=True)
        if args.epochs is not None and epoch >= args.epochs:
            break
        if args.budget_minutes is not None and train_seconds + seconds > args.budget_minutes * 60:
            break

    models = args.output / "models"
    models.mkdir(parents=True, exist_ok=True)
    net = net.to(memory_format=torch.contiguous_format)
    tmp_model = models / "model.pt.tmp"
    torch.save(net.state_dict(), tmp_model)
    os.replace(tmp_model, models / "model.pt")
    tmp = args.output / "history.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, args.output / "history.csv")
    write_run_config(args.output, {
        "bundle": "reference", "modality": datalist["modality"], "preset": PRESET,
        "network_name": preset["network_name"], "network_kwargs": preset["network_kwargs"], "in_channels": 1,
        "num_classes": len(classes), "classes": classes, "image_size": list(SIZE), "resize_mode": "area",
        "extra_input_channels": [],
        "circle_training": False, "seg_threshold": 0.5, "datalist": str(args.datalist), "fold": args.exclude_fold,
        "seed": args.seed, "epochs": epoch, "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(epoch * (n // batch) * batch / train_seconds, 2),
    })
    print(f"done: {epoch} epochs, {train_seconds / 60:.1f} min of training -> {models / 'model.pt'}")


if __name__ == "__main__":
    main()
