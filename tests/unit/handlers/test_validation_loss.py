"""``ValidationLoss``: the training loss over a validator's images, from its own forward passes."""

from __future__ import annotations

import torch
from monai.engines import SupervisedEvaluator
from monai.losses import DiceCELoss

from pipeline.engines import MultiTaskPrepareBatch
from pipeline.handlers import ValidationLoss
from pipeline.keys import Head
from pipeline.losses import MultiTaskLoss


class _TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seg = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.cls = torch.nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> dict:
        return {Head.SEG: self.seg(x), Head.CLS: self.cls(x.mean(dim=(2, 3)))}


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    sizes = (4, 4, 2)   # a smaller last batch: the mean weighs images, not batches
    return [{"image": torch.rand(n, 1, 16, 16, generator=g), "label": (torch.rand(n, 1, 16, 16, generator=g) > 0.7),
             "cls": torch.randint(0, 2, (n,), generator=g)} for n in sizes]


def test_validation_loss_is_the_image_weighted_mean_of_the_training_loss_without_aux_terms():
    torch.manual_seed(0)
    network = _TwoHeads().eval()
    # an auxiliary weight the eval-mode network does not return: left out, not an error
    loss = MultiTaskLoss(DiceCELoss(sigmoid=True), torch.nn.CrossEntropyLoss(), seg_weight=1.0, cls_weight=0.5,
                         aux_weights={"deep_supervision": 0.3})
    batches = _batches()
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=batches, network=network,
                                    prepare_batch=MultiTaskPrepareBatch(mask_key="label"))
    ValidationLoss(loss).attach(evaluator)
    evaluator.run()
    with torch.no_grad():
        terms = []
        for b in batches:
            total, parts = loss.main_terms(network(b["image"]), {Head.SEG: b["label"].float(), Head.CLS: b["cls"]})
            terms.append((len(b["image"]), float(total), float(parts["seg"]), float(parts["cls"])))
    n = sum(t[0] for t in terms)
    for i, name in enumerate(("val_loss", "val_seg_loss", "val_cls_loss"), start=1):
        expected = sum(t[0] * t[i] for t in terms) / n
        assert abs(evaluator.state.metrics[name] - expected) < 1e-6, name
    assert abs(evaluator.state.metrics["val_loss"] - (evaluator.state.metrics["val_seg_loss"]
                                                      + 0.5 * evaluator.state.metrics["val_cls_loss"])) < 1e-6
    evaluator.run()   # a second validation starts from zero
    assert abs(evaluator.state.metrics["val_loss"] - sum(t[0] * t[1] for t in terms) / n) < 1e-6
