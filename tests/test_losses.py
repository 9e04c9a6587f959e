"""Losses equal torch's own modules, and stacked [K, B, O] inputs give per-member losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.catalog.losses import LOSSES, encode_targets, predict_classes, regression_scores
from bench.catalog.models import Head

torch.manual_seed(0)
LOGITS = torch.randn(6, 1, dtype=torch.float64)
Y = torch.tensor([0, 1, 1, 0, 1, 0])


def test_mse_on_probabilities_equals_nn_mseloss() -> None:
    head = Head("sigmoid", 1)
    target = encode_targets(Y, head, "mse", torch.float64)
    expected = nn.MSELoss()(torch.sigmoid(LOGITS), Y.double().unsqueeze(1))
    assert torch.allclose(LOSSES["mse"].fn(LOGITS, target, head), expected)


def test_bce_from_logits_equals_nn_bceloss_on_probabilities() -> None:
    head = Head("sigmoid", 1)
    target = encode_targets(Y, head, "bce", torch.float64)
    expected = nn.BCELoss()(torch.sigmoid(LOGITS), Y.double().unsqueeze(1))
    assert torch.allclose(LOSSES["bce"].fn(LOGITS, target, head), expected)


def test_ce_equals_cross_entropy() -> None:
    logits = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    head = Head("softmax", 3)
    assert torch.allclose(LOSSES["ce"].fn(logits, y, head), F.cross_entropy(logits, y))


def test_tanh_targets_are_plus_minus_one_and_one_hot_for_several_outputs() -> None:
    assert encode_targets(Y, Head("tanh", 1), "mse", torch.float32).flatten().tolist() == [
        -1, 1, 1, -1, 1, -1]
    one_hot = encode_targets(torch.tensor([2, 0]), Head("sigmoid", 3), "mse", torch.float32)
    assert one_hot.tolist() == [[0, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize("loss,head", [("mse", Head("sigmoid", 3)), ("bce", Head("sigmoid", 3)),
                                       ("ce", Head("softmax", 3)), ("mse", Head("tanh", 1))])
def test_stacked_outputs_give_each_members_own_loss(loss: str, head: Head) -> None:
    k, b = 4, 5
    outputs = torch.randn(k, b, head.n_outputs, dtype=torch.float64)
    labels = torch.randint(0, max(head.n_outputs, 2), (k, b))
    targets = torch.stack([encode_targets(labels[i], head, loss, torch.float64) for i in range(k)])
    stacked = LOSSES[loss].fn(outputs, targets, head)
    assert stacked.shape == (k,)
    for i in range(k):
        assert torch.allclose(stacked[i], LOSSES[loss].fn(outputs[i], targets[i], head))


def test_predictions_threshold_at_zero_or_argmax() -> None:
    assert predict_classes(torch.tensor([[-0.1], [0.2]]), Head("tanh", 1)).tolist() == [0, 1]
    assert predict_classes(torch.tensor([[0.1, 0.9], [2.0, 1.0]]), Head("sigmoid", 2)).tolist() == [
        1, 0]


def test_regression_scores() -> None:
    y = torch.tensor([1.0, 2.0, 3.0])
    mse, r2 = regression_scores(torch.tensor([[1.0], [2.0], [3.0]]), y)
    assert float(mse) == 0.0 and float(r2) == 1.0
    mse, r2 = regression_scores(torch.full((3, 1), 2.0), y)
    assert abs(float(mse) - 2 / 3) < 1e-6 and abs(float(r2)) < 1e-6
