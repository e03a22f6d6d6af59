"""Grad-CAM of the worst cases of an evaluation (``gradcam_worst.png``, shown in ``report.html``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from ignite.engine import Engine, Events
from torch.nn import functional as F

from pipeline import plots
from pipeline.handlers.report import _short
from pipeline.html_report import write_html_report

__all__ = ["WorstCaseGradCAM", "GRADCAM_FILE", "worst_cases"]

logger = logging.getLogger(__name__)
GRADCAM_FILE = "gradcam_worst.png"


def worst_cases(per_image: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` rows a reader should look at first: misclassified images, the most confident mistakes first, then
    the lowest Dice among the rest; with ``_wrong`` (misclassified) and ``_confidence`` (the predicted class's
    probability) added.

    Args:
        per_image: an evaluation's ``per_image.csv`` (``true_class``, ``pred_class``, ``prob_<class>``, ``dice``).
        n: how many rows.
    """
    frame = per_image.copy()
    predicted_prob = [float(row.get(f"prob_{row['pred_class']}", math.nan)) for _, row in frame.iterrows()]
    frame["_wrong"] = frame["true_class"].astype(str) != frame["pred_class"].astype(str)
    frame["_confidence"] = predicted_prob
    frame["_dice"] = pd.to_numeric(frame.get("dice"), errors="coerce").fillna(1.0)
    wrong = frame[frame["_wrong"]].sort_values("_confidence", ascending=False, kind="stable")
    right = frame[~frame["_wrong"]].sort_values("_dice", kind="stable")
    return pd.concat([wrong, right]).head(max(0, int(n)))


class WorstCaseGradCAM:
    """After an evaluation: the Grad-CAM map of the predicted class for the worst cases (:func:`worst_cases`), drawn
    over the network's input, into ``<output_dir>/gradcam_worst.png``; the HTML report is written again with it.

    Runs on ``Events.COMPLETED``, after ``EvaluationReport`` wrote ``per_image.csv`` (attach it after the report).
    Each case is taken again from ``dataset`` (the evaluation's own preprocessing), resized to ``image_size`` when the
    evaluation ran at native resolution. A network without a classification head gets no map (logged, not raised).

    Args:
        output_dir: the evaluation folder.
        network: the evaluated network (the zoo's dict of heads, or ``(seg, cls)``).
        dataset: the evaluation dataset (items with ``image`` paths; indexing gives the preprocessed item).
        classes: the model's classes.
        image_size: the network's training size ``(H, W)``.
        n_cases: how many cases (0: none).
        device: where Grad-CAM runs.

    Raises:
        ValueError: ``n_cases`` is negative.
    """

    def __init__(self, output_dir: str | PathLike, network: torch.nn.Module, dataset: Any, classes: Sequence[str],
                 image_size: Sequence[int], n_cases: int = 8, device: str | torch.device = "cpu") -> None:
        if int(n_cases) < 0:
            raise ValueError(f"n_cases must be >= 0, got {n_cases}")
        self.output_dir, self.network, self.dataset = Path(output_dir), network, dataset
        self.classes, self.image_size = [str(c) for c in classes], tuple(int(s) for s in image_size)
        self.n_cases, self.device = int(n_cases), torch.device(device)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> Path | None:
        per_image = self.output_dir / "per_image.csv"
        if self.n_cases == 0 or not per_image.is_file():
            return None
        from pipeline.inference.explain import GradCAMExplainer

        chosen = worst_cases(pd.read_csv(per_image, keep_default_na=False), self.n_cases)
        # an item by its id (unique, also for the slices of one volume), else by its image file
        by_id = {str(item["id"]): i for i, item in enumerate(self.dataset.data) if item.get("id") is not None}
        by_file = {str(Path(item["image"])): i for i, item in enumerate(self.dataset.data)}
        explainer = GradCAMExplainer(lambda: self.network, self.device)
        images, heats, titles, colours = [], [], [], []
        was_training = self.network.training
        try:
            for _, row in chosen.iterrows():
                i = by_id.get(str(row.get("id")), by_file.get(str(row["file"])))
                if i is None:
                    continue
                x = torch.as_tensor(self.dataset[i]["image"]).float()
                if tuple(x.shape[-2:]) != self.image_size:   # native-resolution evaluation: the training size
                    x = F.interpolate(x[None], size=self.image_size, mode="area")[0]
                heat = explainer(x, self.classes.index(str(row["pred_class"])))
                images.append(x[0].numpy())
                heats.append(heat)
                dice = pd.to_numeric(pd.Series([row.get("dice")]), errors="coerce").iloc[0]   # nan: no mask
                titles.append(f"{_short(str(row.get('id') or Path(str(row['file'])).name))}\ntrue: {row['true_class']}"
                              f" | pred: {row['pred_class']} ({row['_confidence']:.2f})\nDice {dice:.2f}")
                colours.append("darkred" if row["_wrong"] else "black")
        except RuntimeError as e:   # e.g. no classification head to explain
            logger.warning("WorstCaseGradCAM: no Grad-CAM for this network (%s)", e)
            return None
        finally:
            self.network.train(was_training)
        if not images:
            return None
        path = plots.plot_gradcam_grid(
            images, heats, titles, self.output_dir / GRADCAM_FILE, title=f"Grad-CAM of the predicted class over the "
            f"network input: {len(images)} worst cases (misclassified, most confident first, then lowest Dice; red "
            "title = misclassified)", title_colours=colours)
        write_html_report(self.output_dir)
        return path
