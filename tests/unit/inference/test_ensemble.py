"""``pipeline.inference.ensemble``: the fold ensemble of the evaluating workflow averages as ``bmtl predict`` does."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.data.io import DataError
from pipeline.engines import MultiTaskInferer
from pipeline.inference.ensemble import (MeanEnsembleInferer, average_probabilities, check_member_runs,
                                         ensemble_inferer, ensemble_threshold, load_members)
from pipeline.keys import Head
from pipeline.registry import create_network


def _network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_network("segresnet_shared", in_channels=1, num_classes=3, init_filters=8).eval()


def _save(network: torch.nn.Module, path, wrapped: bool) -> str:
    """A checkpoint as the bundle's CheckpointSaver writes it: the state dict itself (one object), or under a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network": network.state_dict()} if wrapped else network.state_dict(), path)
    return str(path)


def test_ensemble_logits_give_back_the_mean_of_the_members_probabilities(tmp_path):
    nets = [_network(seed) for seed in range(3)]
    inferer = MultiTaskInferer(roi_size=(32, 32), flip_tta=True)
    x = torch.rand(2, 1, 32, 32)
    members = load_members(_network(99), [_save(nets[1], tmp_path / "a" / "model.pt", wrapped=False),
                                          _save(nets[2], tmp_path / "b" / "model.pt", wrapped=True)])
    with torch.no_grad():
        out = MeanEnsembleInferer(inferer, members)(x, nets[0])
        lesion, classes = average_probabilities(nets, inferer, x)   # what `bmtl predict` computes
        single = [torch.softmax(inferer(x, n)[Head.CLS.value], 1) for n in nets]
    assert set(out) == {Head.SEG.value, Head.CLS.value}
    torch.testing.assert_close(torch.sigmoid(out[Head.SEG.value]), lesion, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.softmax(out[Head.CLS.value], 1), classes, atol=1e-6, rtol=0)
    torch.testing.assert_close(classes, torch.stack(single).mean(0), atol=1e-6, rtol=0)
    assert not torch.allclose(single[0], single[1], atol=1e-3)   # the members differ: the mean is not one of them


def test_members_are_copies_with_their_own_weights_and_the_network_is_untouched(tmp_path):
    network, other = _network(0), _network(1)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    (member,) = load_members(network, [_save(other, tmp_path / "m.pt", wrapped=False)])
    assert member is not network and not member.training
    for key, value in other.state_dict().items():
        assert torch.equal(member.state_dict()[key], value), key
        assert torch.equal(network.state_dict()[key], before[key]), key


def test_a_checkpoint_of_another_network_or_a_missing_one_is_named(tmp_path):
    wider = create_network("segresnet_shared", in_channels=1, num_classes=3, init_filters=16)
    path = _save(wider, tmp_path / "wide" / "model.pt", wrapped=True)
    with pytest.raises(DataError, match="wide/model.pt.*shape mismatch"):
        load_members(_network(0), [path])
    with pytest.raises(DataError, match="nothing/model.pt.*not found"):
        load_members(_network(0), [str(tmp_path / "nothing" / "model.pt")])


def test_a_member_run_of_another_configuration_is_refused(tmp_path):
    ours = {"classes": ["normal", "benign", "malignant"], "image_size": [64, 64], "network_name": "segresnet_shared"}
    evaluated, same, other, bare = (tmp_path / name for name in ("evaluated", "same", "other", "bare"))
    for run, config in ((evaluated, ours), (same, {**ours, "seed": 3}), (other, {**ours, "image_size": [128, 128]})):
        (run / "models").mkdir(parents=True)
        (run / "run_config.json").write_text(json.dumps(config))
    ours = evaluated / "run_config.json"
    check_member_runs([same / "models" / "model.pt", bare / "models" / "model.pt"], ours)   # bare: no record to check
    with pytest.raises(ValueError, match=r"other/models/model.pt cannot be averaged .* image_size is \[128, 128\], "
                                         r"not \[64, 64\]"):
        check_member_runs([same / "models" / "model.pt", other / "models" / "model.pt"], ours)


def test_ensemble_inferer_is_the_plain_inferer_without_members_and_refuses_bn_recalibration(tmp_path):
    inferer = MultiTaskInferer(roi_size=(32, 32))
    config = tmp_path / "run_config.json"   # absent: the members are checked by their weights only
    assert ensemble_inferer(inferer, _network(0), [], "cpu", config, "target") is inferer
    path = _save(_network(1), tmp_path / "m.pt", wrapped=False)
    assert isinstance(ensemble_inferer(inferer, _network(0), [path], "cpu", config), MeanEnsembleInferer)
    with pytest.raises(ValueError, match="bn_recalibration='target'.*bn_recalibration=none"):
        ensemble_inferer(inferer, _network(0), [path], "cpu", config, "target")


def test_the_ensemble_threshold_is_the_members_mean_or_argmax():
    assert ensemble_threshold([0.4]) == 0.4
    assert ensemble_threshold([0.3, 0.5]) == pytest.approx(0.4)
    assert ensemble_threshold([0.3, None]) is None and ensemble_threshold([None]) is None
