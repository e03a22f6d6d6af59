"""Are a trained network's batch-norm running statistics what its eval-mode scores hinge on?

For each finished bundle run (a folder with ``run_config.json`` and ``models/model.pt``, e.g. one of
``benchmarks/busbra.py``'s), scores the model on its validation fold twice: with the running statistics it was saved
with, then with statistics re-estimated from its training images, preprocessed but not augmented
(``torch.optim.swa_utils.update_bn``: one pass in train mode without gradients, cumulative average; the weights are
unchanged). A large gap means the statistics lag the weights (e.g. a small batch-norm momentum after a short
training). The positive class is the datalist's last ("malignant"), as in the bundle's evaluation.

    python benchmarks/bn_statistics.py runs/bench_busbra/runs/segresnet_effnet/fold0 ...

Prints a Markdown table: AUC (malignant) and mean Dice (threshold 0.5, at the training size, not the images' own size
as the bundle's evaluation) before and after, and the standard deviation of the malignant probability over the images
("-": a task the network does not learn).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.metrics import DiceMetric
from monai.transforms import Compose
from sklearn.metrics import roc_auc_score
from torch.optim.swa_utils import update_bn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import hardware_summary  # noqa: E402
from pipeline.data.datalist import split_items  # noqa: E402
from pipeline.deploy import bundle_parser, load_run_config, load_state_dict  # noqa: E402
from pipeline.keys import BatchKey, Head  # noqa: E402
from pipeline.registry import network_info  # noqa: E402
from pipeline.workflows import RECORDED_NETWORK_KEYS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class _Images:
    """The image tensors of a dict loader (what ``update_bn`` feeds the network)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self):
        return (torch.as_tensor(batch[BatchKey.IMAGE]) for batch in self.loader)


def load_run(run_dir: Path) -> tuple[torch.nn.Module, Compose, dict]:
    """The run's network with its saved weights, the bundle's preprocessing and the run's configuration."""
    config = load_run_config(run_dir)
    # the network as the run recorded it (a preset's values are merged at training time, not named here)
    recorded = {k: config[k] for k in RECORDED_NETWORK_KEYS if k in config}
    parser = bundle_parser(REPO / "bundles" / config["bundle"], ("common.yaml",), datalist=config["datalist"],
                           fold=config["fold"], output_dir=str(run_dir), **recorded)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(load_state_dict(run_dir / "models" / "model.pt"))
    return network, Compose(parser.get_parsed_content("preprocessing_transforms")), config


@torch.no_grad()
def score(network: torch.nn.Module, loader: DataLoader, classes: list[str]) -> dict[str, float]:
    network.eval()
    dice, labels, probabilities = DiceMetric(include_background=True), [], []
    for batch in loader:
        out = network(torch.as_tensor(batch[BatchKey.IMAGE]))
        dice(y_pred=(torch.sigmoid(out[Head.SEG][:, :1]) > 0.5).float(), y=torch.as_tensor(batch[BatchKey.LABEL]))
        probabilities.append(torch.softmax(out[Head.CLS], dim=1)[:, -1])
        labels.append(torch.as_tensor(batch[BatchKey.CLS]).view(-1))
    y, p = torch.cat(labels).numpy(), torch.cat(probabilities).numpy()
    malignant = y == len(classes) - 1
    return {"auc": float(roc_auc_score(malignant, p)), "dice": float(dice.aggregate().item()),
            "p_std": float(np.std(p))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished bundle run folders")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the re-estimation pass")
    args = parser.parse_args(argv)
    print(f"machine: {hardware_summary()}")
    print("| run | AUC saved | AUC re-estimated | Dice saved | Dice re-estimated | p(malignant) std saved |")
    print("|---|---:|---:|---:|---:|---:|")
    for run_dir in args.runs:
        torch.manual_seed(0)
        network, preprocessing, config = load_run(run_dir)
        val = DataLoader(Dataset(split_items(config["datalist"], config["fold"], "val"), preprocessing), batch_size=32)
        train = DataLoader(Dataset(split_items(config["datalist"], config["fold"], "train"), preprocessing),
                           batch_size=args.batch, shuffle=True)
        saved = score(network, val, config["classes"])
        update_bn(_Images(train), network)
        again = score(network, val, config["classes"])
        tasks = network_info(config["network_name"]).tasks  # a single-task baseline's other head is a constant
        cells = [f"{result[metric]:.3f}" if task in tasks else "-" for task, metric in (("cls", "auc"), ("seg", "dice"))
                 for result in (saved, again)] + [f"{saved['p_std']:.3f}" if "cls" in tasks else "-"]
        print(f"| {run_dir} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
