"""``BatchNormRecalibration``: the running statistics become those of the evaluated (or given) images, nothing else
changes, and networks without batch norm are left alone."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator

from pipeline.handlers import BatchNormRecalibration, has_batch_norm


def _network(norm: str = "batch") -> torch.nn.Module:
    torch.manual_seed(0)
    layer = torch.nn.BatchNorm2d(2) if norm == "batch" else torch.nn.GroupNorm(1, 2)
    return torch.nn.Sequential(layer, torch.nn.Conv2d(2, 1, 3, padding=1)).eval()


def _batches(offset: float, n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(int(offset))
    return [{"image": torch.randn(4, 2, 8, 8, generator=g) * 3.0 + offset, "label": torch.zeros(4, 1, 8, 8)}
            for _ in range(n)]


def _evaluate(network: torch.nn.Module, batches: list, handler: BatchNormRecalibration) -> None:
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=batches, network=network)
    handler.attach(evaluator)
    evaluator.run()


@pytest.mark.parametrize("source", ["evaluated", "given"])
def test_statistics_become_those_of_the_images_and_nothing_else_changes(source):
    network = _network()
    bn = network[0]
    evaluated, given = _batches(5.0), _batches(-2.0)
    weights = {k: v.clone() for k, v in network.state_dict().items() if "running" not in k and "num_batches" not in k}
    handler = BatchNormRecalibration(loader=given if source == "given" else None)
    _evaluate(network, evaluated, handler)
    images = torch.cat([b["image"] for b in (given if source == "given" else evaluated)])
    # update_bn weighs each batch equally: with batches of one size, the mean over all images
    torch.testing.assert_close(bn.running_mean, images.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    per_batch_var = torch.stack([b["image"].var(dim=(0, 2, 3)) for b in (given if source == "given" else evaluated)])
    torch.testing.assert_close(bn.running_var, per_batch_var.mean(0), atol=1e-3, rtol=1e-3)
    assert handler.batches == 3
    assert not network.training and bn.momentum == 0.1   # mode and momentum restored
    for k, v in network.state_dict().items():
        if k in weights:
            torch.testing.assert_close(v, weights[k])     # only the statistics moved


def test_disabled_max_batches_and_no_batch_norm():
    network = _network()
    before = network[0].running_mean.clone()
    _evaluate(network, _batches(5.0), BatchNormRecalibration(enabled=False))
    torch.testing.assert_close(network[0].running_mean, before)   # off: untouched

    handler = BatchNormRecalibration(max_batches=1)
    _evaluate(network, _batches(5.0), handler)
    assert handler.batches == 1
    torch.testing.assert_close(network[0].running_mean, _batches(5.0)[0]["image"].mean(dim=(0, 2, 3)),
                               atol=1e-4, rtol=1e-4)

    group = _network("group")
    assert has_batch_norm(network) and not has_batch_norm(group)
    handler = BatchNormRecalibration()
    _evaluate(group, _batches(5.0), handler)
    assert handler.batches == 0
    with pytest.raises(ValueError, match="max_batches"):
        BatchNormRecalibration(max_batches=0)
