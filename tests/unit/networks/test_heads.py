"""Tests of the classification heads shared by the networks (``pipeline.networks.heads``)."""

from __future__ import annotations

import pytest
import torch

from pipeline.networks.heads import FineGrainedClassifier, masked_average_pool


def test_masked_average_pool():
    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :4, :4] = 1.0  # the top-left quarter = feature pixel (0, 0), (0, 1), (1, 0), (1, 1)
    expected = features[:, :, :2, :2].mean(dim=(2, 3))
    torch.testing.assert_close(masked_average_pool(features, mask), expected, rtol=1e-5, atol=1e-4)
    empty = masked_average_pool(features, torch.zeros(2, 1, 8, 8))
    assert torch.isfinite(empty).all() and (empty == 0).all()


def test_fine_grained_classifier_uses_the_lesion_probability():
    torch.manual_seed(0)
    classifier = FineGrainedClassifier([8, 4], 16, num_classes=2, hidden=16).eval()
    decoded = [torch.randn(1, 8, 8, 8), torch.randn(1, 4, 16, 16)]
    bottleneck = torch.randn(1, 16, 2, 2)
    left = torch.zeros(1, 1, 16, 16)
    left[..., :8] = 1.0
    with torch.no_grad():
        a = classifier(decoded, left, bottleneck)
        b = classifier(decoded, 1.0 - left, bottleneck)
        c = classifier(decoded, left.clone(), bottleneck)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


@pytest.mark.parametrize("features, follows_mask", [("bottleneck", True), ("global", False)])
def test_classifier_features_choose_what_is_pooled(features, follows_mask):
    torch.manual_seed(0)
    classifier = FineGrainedClassifier([8, 4], 16, num_classes=2, hidden=16, features=features).eval()
    assert classifier.head.mlp[1].in_features == {"bottleneck": 32, "global": 16}[features]
    bottleneck = torch.randn(1, 16, 2, 2)
    left = torch.zeros(1, 1, 16, 16)
    left[..., :8] = 1.0
    with torch.no_grad():
        a = classifier([], left, bottleneck)  # no decoder feature is read
        b = classifier([], 1.0 - left, bottleneck)
    assert torch.allclose(a, b) != follows_mask
