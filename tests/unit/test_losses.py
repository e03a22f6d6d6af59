from __future__ import annotations

import pytest
import torch

from pipeline.keys import Head
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

from pipeline.losses import FocalClassificationLoss, MultiTaskLoss


def _target(b=2, size=32):
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, 8:20, 8:20] = 1
    return {"seg": mask, "cls": torch.tensor([0, 1])[:b]}


def _pred(b=2, size=32, seg_channels=1, k=2):
    torch.manual_seed(0)
    return {
        "seg": torch.randn(b, seg_channels, size, size, requires_grad=True),
        "cls": torch.randn(b, k, requires_grad=True),
    }


SEG_LOSSES = {"dice": DiceLoss, "dice_ce": DiceCELoss, "dice_focal": DiceFocalLoss}


def _seg_loss(name: str = "dice_ce", seg_channels: int = 1) -> nn.Module:
    """A MONAI segmentation loss as the presets declare it: a sigmoid for one channel, else a softmax on one-hot."""
    act = {"sigmoid": True} if seg_channels == 1 else {"softmax": True, "to_onehot_y": True}
    return SEG_LOSSES[name](**act)


@pytest.mark.parametrize("seg_name", sorted(SEG_LOSSES))
@pytest.mark.parametrize("cls_loss", [nn.CrossEntropyLoss, FocalClassificationLoss])
@pytest.mark.parametrize("seg_channels", [1, 2])
def test_loss_combinations_are_finite_and_differentiable(seg_name, cls_loss, seg_channels):
    loss = MultiTaskLoss(_seg_loss(seg_name, seg_channels), cls_loss(weight=torch.tensor([1.0, 2.0])))
    pred = _pred(seg_channels=seg_channels)
    value = loss(pred, _target())
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert pred["seg"].grad is not None and pred["cls"].grad is not None
    assert set(loss.terms) == {"seg", "cls"}


def test_focal_classification_loss_takes_cross_entropys_layout():
    logits, labels = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]]), torch.tensor([0, 1, 1])
    # gamma 0 is the cross-entropy, MONAI's mean running over the K one-hot entries too
    focal = FocalClassificationLoss(gamma=0.0)(logits, labels)
    assert focal.item() == pytest.approx(nn.functional.cross_entropy(logits, labels).item() / 2, rel=1e-5)
    # focusing lowers the loss of the well-classified item more than that of the poorly classified one
    assert FocalClassificationLoss(gamma=2.0)(logits, labels) < focal


def test_weights_scale_the_terms():
    pred, target = _pred(), _target()
    seg_only = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss(), seg_weight=1.0, cls_weight=0.0)(pred, target)
    cls_only = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss(), seg_weight=0.0, cls_weight=1.0)(pred, target)
    both = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss(), seg_weight=0.35, cls_weight=0.65)(pred, target)
    torch.testing.assert_close(both, 0.35 * seg_only + 0.65 * cls_only)


def test_aux_outputs_add_weighted_terms():
    pred, target = _pred(), _target()
    pred[Head.DEEP_SUPERVISION] = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 16, 16)]
    pred[Head.OBJECT_REGIONS] = torch.randn(2, 2, 8, 8)
    pred["first_pass_seg"] = torch.randn(2, 1, 32, 32)
    base = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss())(pred, target)
    loss = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss(),
                         aux_weights={"deep_supervision": 0.5, "object_regions": 0.4, "first_pass_seg": 1.0})
    value = loss(pred, target)
    expected = base + 0.5 * loss.terms["deep_supervision"] + 0.4 * loss.terms["object_regions"] + loss.terms[
        "first_pass_seg"]
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(loss.terms) == {"seg", "cls", "deep_supervision", "object_regions", "first_pass_seg"}


def test_auxiliary_classification_target_is_cross_entropy_over_the_items_that_have_one():
    pred, target = _pred(b=3), _target(b=2)
    target = {"seg": torch.cat([target["seg"], target["seg"][:1]]), "cls": torch.tensor([0, 1, 1])}
    pred["birads"] = torch.randn(3, 4, requires_grad=True)
    target["birads"] = torch.tensor([2, -1, 0])  # the second item has no category
    loss = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss(), aux_weights={"birads": 0.5})
    value = loss(pred, target)
    expected = torch.nn.functional.cross_entropy(pred["birads"][[0, 2]], torch.tensor([2, 0]))
    assert loss.terms["birads"] == pytest.approx(expected.item(), rel=1e-5)
    base = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss())(pred, target)
    assert value.item() == pytest.approx(base.item() + 0.5 * expected.item(), rel=1e-5)
    value.backward()
    assert pred["birads"].grad[1].abs().sum() == 0 and pred["birads"].grad[0].abs().sum() > 0
    # a batch without any category: the term is 0 (not NaN) and the loss stays finite
    target["birads"] = torch.full((3,), -1)
    assert loss(pred, target).isfinite() and loss.terms["birads"] == 0.0


def test_missing_keys_and_bad_arguments():
    loss = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss(), aux_weights={"object_regions": 0.4})
    with pytest.raises(KeyError, match="no 'cls' key"):
        loss({"seg": torch.zeros(1, 1, 8, 8)}, _target(1, 8))
    with pytest.raises(KeyError, match="aux weight given for 'object_regions'"):
        loss(_pred(1, 8), _target(1, 8))
    with pytest.raises(ValueError, match="seg_weight"):
        MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss(), seg_weight=-1)


def test_perfect_prediction_scores_lower_than_wrong():
    target = _target()
    good = {"seg": (target["seg"] * 20 - 10), "cls": torch.tensor([[5.0, -5.0], [-5.0, 5.0]])}
    bad = {"seg": -good["seg"], "cls": -good["cls"]}
    loss = MultiTaskLoss(_seg_loss(), nn.CrossEntropyLoss())
    assert loss(good, target) < 0.1 < loss(bad, target)
