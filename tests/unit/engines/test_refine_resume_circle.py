from __future__ import annotations

import os
import time

import pytest
import torch

from pipeline.engines import CircleTraining, resume_checkpoint
from pipeline.transforms import RefinePredictiond
from pipeline.registry import create_network


def _out(probs, mask_on):
    mask = torch.zeros(1, 8, 8)
    if mask_on:
        mask[:, 2:4, 2:4] = 1
    return {"pred_seg": mask, "pred_cls": torch.tensor(probs)}


def test_refinement_makes_the_heads_agree_on_normal():
    refine = RefinePredictiond(keys="pred_seg", cls_key="pred_cls", normal_index=0)
    out = refine(_out([0.7, 0.2, 0.1], mask_on=True))  # classified normal -> mask emptied
    assert not out["pred_seg"].any() and out["refined"]
    out = refine(_out([0.1, 0.2, 0.7], mask_on=False))  # no lesion pixel -> normal
    assert out["pred_cls"].tolist() == [1.0, 0.0, 0.0] and out["refined"]
    out = refine(_out([0.1, 0.2, 0.7], mask_on=True))  # consistent: unchanged
    assert out["pred_seg"].sum() == 4 and not out["refined"]
    assert not RefinePredictiond(keys="pred_seg", normal_index=None)(_out([0.1, 0.9], False))["refined"]
    assert not RefinePredictiond(keys="pred_seg", enabled=False)(_out([0.7, 0.2, 0.1], True))["refined"]


def test_refinement_decides_normal_as_the_operating_threshold_does():
    """p(malignant) 0.35 is below the argmax but above the operating threshold 0.3: the image is called malignant,
    so its mask is kept (argmax would have called it normal and emptied it)."""
    probs = [0.4, 0.25, 0.35]
    by_argmax = RefinePredictiond(keys="pred_seg", cls_key="pred_cls", normal_index=0)(_out(probs, mask_on=True))
    assert not by_argmax["pred_seg"].any() and by_argmax["refined"]
    by_threshold = RefinePredictiond(keys="pred_seg", cls_key="pred_cls", normal_index=0, threshold=0.3)(
        _out(probs, mask_on=True))
    assert by_threshold["pred_seg"].sum() == 4 and not by_threshold["refined"]


def test_resume_checkpoint_picks_the_newest_and_honours_the_switch(tmp_path):
    assert resume_checkpoint(tmp_path, "auto") is None
    with pytest.raises(FileNotFoundError, match="resume=true"):
        resume_checkpoint(tmp_path, True)
    older, newer = tmp_path / "last_checkpoint_epoch=1.pt", tmp_path / "last.pt"
    older.write_bytes(b"1")
    newer.write_bytes(b"2")
    now = time.time()
    os.utime(older, (now - 10, now - 10))
    assert resume_checkpoint(tmp_path, "auto") == str(newer)
    assert resume_checkpoint(tmp_path, "false") is None
    with pytest.raises(ValueError, match="resume must be"):
        resume_checkpoint(tmp_path, "maybe")


def test_circle_training_returns_the_refined_pass_and_the_first_pass():
    torch.manual_seed(0)
    net = create_network("mtil", init_filters=8).eval()
    wrapped = CircleTraining(net).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        out = wrapped(x)
        first = net(x)
        second = net(x, prev_seg=torch.sigmoid(first["seg"]))
    torch.testing.assert_close(out["first_pass_seg"], first["seg"])
    torch.testing.assert_close(out["seg"], second["seg"])
    torch.testing.assert_close(out["cls"], second["cls"])
