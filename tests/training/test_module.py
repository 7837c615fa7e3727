"""The LightningModule: smoothing on training batches only, hard labels for evaluation."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from ser.training.metrics import recall_metrics
from ser.training.module import EmotionClassifier


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.mean(dim=1))


def make_module(smoothing: float = 0.1) -> EmotionClassifier:
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.93, 0.98), eps=1e-8)
    return EmotionClassifier(Linear(), optimizer, ["a", "b", "c"], label_smoothing=smoothing)


def test_training_loss_is_smoothed_and_test_loss_is_not() -> None:
    torch.manual_seed(0)
    module = make_module()
    x, y = torch.randn(8, 5, 4), torch.randint(0, 3, (8,))
    logits = module(x)
    # Keras-style smoothing: (1 - 0.1) * onehot + 0.1 / C.
    soft = torch.nn.functional.one_hot(y, 3).float() * 0.9 + 0.1 / 3
    smoothed = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    hard = nn.functional.cross_entropy(logits, y)
    assert torch.allclose(module.train_loss(logits, y), smoothed, atol=1e-6)
    assert torch.allclose(module.eval_loss(logits, y), hard, atol=1e-6)
    assert not torch.allclose(smoothed, hard)


def test_smoothing_never_mutates_the_labels() -> None:
    module = make_module()
    y = torch.tensor([0, 1, 2, 1])
    before = y.clone()
    for _ in range(3):  # as if three folds trained on the same rows
        module.train_loss(torch.randn(4, 3), y)
    assert torch.equal(y, before)


def test_optimizer_is_built_from_the_partial_with_reference_settings() -> None:
    optimizer = make_module().configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["lr"] == 1e-3 and group["betas"] == (0.93, 0.98) and group["eps"] == 1e-8


def test_uar_and_war_from_a_confusion_matrix() -> None:
    confusion = [[8, 2, 0], [1, 1, 0], [0, 0, 0]]  # class 2 absent from the test fold
    assert float(recall_metrics(confusion)["war"]) == pytest.approx(9 / 12)
    assert float(recall_metrics(confusion)["uar"]) == pytest.approx((0.8 + 0.5) / 2)
