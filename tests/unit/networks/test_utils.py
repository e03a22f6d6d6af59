"""The helpers every network shares."""

from __future__ import annotations

import torch

from pipeline.networks.utils import lesion_probability


def test_lesion_probability_of_one_channel_is_its_sigmoid():
    logits = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(lesion_probability(logits), torch.sigmoid(logits))


def test_lesion_probability_of_a_softmax_is_every_class_but_the_background():
    two = torch.randn(2, 2, 4, 4)
    torch.testing.assert_close(lesion_probability(two), torch.softmax(two, 1)[:, 1:2])
    torch.testing.assert_close(lesion_probability(two, 2), lesion_probability(two))
    three = torch.randn(2, 3, 4, 4)
    expected = torch.softmax(three, 1)[:, 1:].sum(dim=1, keepdim=True)
    torch.testing.assert_close(lesion_probability(three), expected)
    assert lesion_probability(three).shape == (2, 1, 4, 4)
