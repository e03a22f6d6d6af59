from __future__ import annotations

import pandas as pd
import pytest
import torch
from monai.data import Dataset

from pipeline.handlers import GRADCAM_FILE, WorstCaseGradCAM
from pipeline.handlers.explain import worst_cases

CLASSES = ["benign", "malignant"]


def _per_image(rows):
    return pd.DataFrame(rows, columns=["id", "file", "true_class", "pred_class", "prob_benign", "prob_malignant",
                                       "dice"])


def test_worst_cases_are_confident_mistakes_first_then_the_lowest_dice():
    table = _per_image([
        ["a", "a.png", "benign", "benign", 0.9, 0.1, 0.30],
        ["b", "b.png", "benign", "malignant", 0.4, 0.6, 0.95],      # wrong, 0.6 sure
        ["c", "c.png", "malignant", "benign", 0.95, 0.05, 0.90],    # wrong, 0.95 sure: first
        ["d", "d.png", "malignant", "malignant", 0.2, 0.8, 0.10],   # right, lowest Dice
        ["e", "e.png", "benign", "benign", 0.8, 0.2, ""],           # no Dice (no mask): last
    ])
    assert worst_cases(table, 4)["id"].tolist() == ["c", "b", "d", "a"]
    assert worst_cases(table, 0).empty


class _Net(torch.nn.Module):
    """A convolution feeding both heads, as the zoo's networks return them."""

    def __init__(self, with_cls: bool = True):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)
        self.with_cls = with_cls

    def forward(self, x):
        features = torch.relu(self.conv(x))
        cls = self.fc(features.mean(dim=(2, 3))) if self.with_cls else torch.zeros(len(x), 2)
        return {"seg": features[:, :1], "cls": cls}


def _setup(tmp_path, with_cls=True, size=32):
    torch.manual_seed(0)
    items = [{"id": f"case{i}", "image": f"/data/case{i}.png"} for i in range(3)]
    data = [dict(item, image_tensor=torch.rand(1, size, size)) for item in items]
    dataset = Dataset(data, transform=lambda d: {**d, "image": d["image_tensor"]})
    dataset.data = data
    _per_image([[f"case{i}", f"/data/case{i}.png", "benign", CLASSES[i % 2], 0.5, 0.5, 0.5 + i / 10]
                for i in range(3)]).to_csv(tmp_path / "per_image.csv", index=False)
    (tmp_path / "summary.json").write_text('{"n_images": 3, "classes": ["benign", "malignant"]}')
    net = _Net(with_cls).train()
    return WorstCaseGradCAM(tmp_path, net, dataset, CLASSES, image_size=(32, 32), n_cases=2), net


def test_handler_writes_the_figure_and_puts_it_in_the_report(tmp_path):
    handler, net = _setup(tmp_path)
    path = handler()
    assert path == tmp_path / GRADCAM_FILE and path.stat().st_size > 5000
    assert "<h2 id='gradcam'>" in (tmp_path / "report.html").read_text()
    assert net.training   # the network's mode is given back


def test_native_resolution_inputs_are_resized_to_the_training_size(tmp_path):
    handler, _ = _setup(tmp_path, size=48)
    assert handler() is not None


def test_a_network_without_a_class_head_gets_no_figure_and_no_error(tmp_path):
    handler, _ = _setup(tmp_path, with_cls=False)
    assert handler() is None and not (tmp_path / GRADCAM_FILE).exists()


def test_zero_cases_write_nothing_and_negative_is_refused(tmp_path):
    handler, net = _setup(tmp_path)
    handler.n_cases = 0
    assert handler() is None and not (tmp_path / GRADCAM_FILE).exists()
    with pytest.raises(ValueError, match="n_cases must be >= 0"):
        WorstCaseGradCAM(tmp_path, net, [], CLASSES, (32, 32), n_cases=-1)
