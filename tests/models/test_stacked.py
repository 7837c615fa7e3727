"""Fold stacking: the folds' networks computed as one program compute what each computes alone.

The specification is `StackedNetworks(grouped=False)`, the folds one after another, each
after `torch.manual_seed(its seed)`, which is what a fold alone does (checked first).
The grouped computation (reference: grouped convolutions; fast: folds as groups of the
fused kernels) must match it for every ablation switch, in train mode with dropout and
in eval mode: the outputs, every parameter's gradient, the BatchNorm running statistics
and counters, with unequal participating subsets (folds 0 and 2 of 3; fold 1 untouched).
Tolerances as in test_fast.py (fp32: relative 1e-4; in float64 to rounding).
"""

from __future__ import annotations

import copy

import pytest
import torch

from ser.models import MSSENet, TIMNet
from ser.models.stacked import StackedNetworks, groupable
from tests.helpers.implementations import (  # noqa: F401 (one_thread: an autouse fixture)
    ABLATIONS,
    cancelled_bias,
    features,
    one_thread,
    relative_error,
)

FOLDS, SEEDS = [0, 2], [101, 202]




def fold_networks(implementation: str, network=MSSENet, count: int = 3, **overrides):  # noqa: ANN001, ANN201
    """`count` networks with different initial weights, as the folds of a run have."""
    nets = []
    for fold in range(count):
        torch.manual_seed(10 + fold)
        nets.append(network(num_classes=5, num_blocks=3, implementation=implementation, **overrides))
    return nets


def fold_batches(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.stack([features(6, 20, seed=seed) for seed in (1, 2)]).to(dtype)


def step(stacked: StackedNetworks, x: torch.Tensor, train: bool, seeds=SEEDS):  # noqa: ANN001, ANN201
    """Logits and the gradients of a fixed weighting of them."""
    stacked.train(train)
    out = stacked(x, FOLDS, seeds if train else None)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out)
    (out * weights).sum().backward()
    return out.detach()


def assert_same_folds(grouped: StackedNetworks, each: StackedNetworks, train: bool, tolerance: float) -> None:
    """Every gradient and buffer of `grouped` equals `each`'s (relative `tolerance`)."""
    for (name, got), expected in zip(grouped.named_parameters(), each.parameters(), strict=True):
        if expected.grad is None:  # fold 1 took no part
            assert got.grad is None, name
            continue
        weight = cancelled_bias(name, train)
        if weight is not None:  # zero up to rounding: compared at the weight's scale
            scale = each.get_parameter(weight).grad.norm()
            assert (got.grad - expected.grad).norm() <= tolerance * scale, name
        else:
            assert relative_error(got.grad, expected.grad) <= tolerance, name
    for (name, got), expected in zip(grouped.named_buffers(), each.buffers(), strict=True):
        if got.dtype.is_floating_point:
            assert relative_error(got, expected) <= tolerance, name
        else:
            assert torch.equal(got, expected), name


def compare(nets: list, x: torch.Tensor, train: bool, tolerance: float, monkeypatch) -> None:  # noqa: ANN001
    each = StackedNetworks(copy.deepcopy(nets), grouped=False)
    grouped = StackedNetworks(copy.deepcopy(nets))
    assert groupable(list(grouped.nets))
    expected = step(each, x, train)
    # the grouped computation, not the loop, must have produced the result
    with monkeypatch.context() as patch:
        patch.setattr(StackedNetworks, "_each", lambda *args: pytest.fail("ran the loop"))
        got = step(grouped, x, train)
    assert relative_error(got, expected) <= tolerance
    assert_same_folds(grouped, each, train, tolerance)
    untouched = nets[1].state_dict()
    for key, value in grouped.nets[1].state_dict().items():
        assert torch.equal(value, untouched[key]), key


def test_the_loop_is_each_fold_alone() -> None:
    """The specification: fold f of the loop computes its network after manual_seed(seed)."""
    nets = fold_networks("reference")
    x = fold_batches()
    stacked = StackedNetworks(copy.deepcopy(nets), grouped=False).train()
    out = stacked(x, FOLDS, SEEDS)
    for position, (fold, seed) in enumerate(zip(FOLDS, SEEDS, strict=True)):
        torch.manual_seed(seed)
        assert torch.equal(out[position], nets[fold].train()(x[position]))
    assert not torch.equal(out[0], stacked(x, FOLDS, [7, 8])[0])  # dropout is on


@pytest.mark.parametrize("implementation", ["reference", "fast"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("overrides", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_grouped_folds_match_each_fold(implementation: str, train: bool, overrides: dict, monkeypatch) -> None:  # noqa: ANN001
    compare(fold_networks(implementation, **overrides), fold_batches(), train, 1e-4, monkeypatch)


@pytest.mark.parametrize("implementation", ["reference", "fast"])
def test_timnet_and_more_blocks(implementation: str, monkeypatch) -> None:  # noqa: ANN001
    nets = fold_networks(implementation, TIMNet)
    compare(nets, fold_batches(), True, 1e-4, monkeypatch)
    nets = [MSSENet(num_classes=4, num_blocks=6, implementation=implementation) for _ in range(3)]
    compare(nets, fold_batches(), True, 1e-4, monkeypatch)  # dilations 8, 16, 32 >= 20 frames


@pytest.mark.parametrize("implementation", ["reference", "fast"])
def test_float64_to_rounding(implementation: str, monkeypatch) -> None:  # noqa: ANN001
    """In float64 the grouped and the loop computation are the same function."""
    nets = [net.double() for net in fold_networks(implementation)]
    compare(nets, fold_batches(torch.float64), True, 1e-9, monkeypatch)


@pytest.mark.parametrize("implementation", ["reference", "fast"])
def test_adam_steps_keep_folds_apart(implementation: str) -> None:
    """A few optimiser steps of the stacked folds leave each fold's weights as its own steps."""
    nets = fold_networks(implementation)
    runs = {}
    for grouped in (False, True):
        stacked = StackedNetworks(copy.deepcopy(nets), grouped=grouped).train()
        optimizer = torch.optim.Adam(stacked.parameters(), lr=1e-3, betas=(0.93, 0.98))
        for k in range(3):
            x = torch.stack([features(6, 20, seed=10 * k + s) for s in (1, 2)])
            y = torch.tensor([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 1]])
            logits = stacked(x, FOLDS, [k, 100 + k])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        runs[grouped] = stacked
    for (name, a), b in zip(runs[True].state_dict().items(), runs[False].state_dict().values(), strict=True):
        if cancelled_bias(name, True):
            # Adam scales these gradients, zero up to rounding, to steps of about lr
            assert (a - b).abs().max() <= 3 * 2 * 1e-3, name
        elif name.endswith("running_mean"):  # takes 0.01 of those biases per step
            assert (a - b).abs().max() <= 3 * 0.01 * 2 * 1e-3, name
        elif a.dtype.is_floating_point:
            assert relative_error(a, b) <= 1e-4, name
        else:
            assert torch.equal(a, b), name


def test_embeddings_and_eval_equal_each_network() -> None:
    nets = fold_networks("fast")
    x = fold_batches()
    stacked = StackedNetworks(nets).eval()
    with torch.no_grad():
        z = stacked.embed(x, FOLDS)
        logits = stacked(x, FOLDS)
        for position, fold in enumerate(FOLDS):
            assert relative_error(z[position], nets[fold].embed(x[position])) <= 1e-5
            assert relative_error(logits[position], nets[fold](x[position])) <= 1e-5


def test_seeded_masks_leave_the_global_generator_alone() -> None:
    nets = fold_networks("fast")
    stacked = StackedNetworks(nets).train()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = stacked(fold_batches(), FOLDS, SEEDS)
    assert torch.equal(torch.get_rng_state(), state)
    # the same seeds draw the same masks (train mode normalises by batch statistics)
    assert torch.equal(stacked(fold_batches(), FOLDS, SEEDS), first)
    assert not torch.equal(stacked(fold_batches(), FOLDS, [1, 2]), first)


def test_unseeded_masks_are_drawn_fold_after_fold(monkeypatch) -> None:  # noqa: ANN001
    nets = fold_networks("reference")
    x = fold_batches()
    torch.manual_seed(4)
    expected = StackedNetworks(copy.deepcopy(nets), grouped=False).train()(x, FOLDS)
    torch.manual_seed(4)
    got = StackedNetworks(copy.deepcopy(nets)).train()(x, FOLDS)
    assert relative_error(got, expected) <= 1e-5


def test_networks_that_cannot_be_grouped_run_one_after_another() -> None:
    nets = fold_networks("reference")
    nets[2] = MSSENet(num_classes=5, num_blocks=4)  # another architecture
    assert not groupable(nets)
    nets[2] = fold_networks("reference")[2]
    nets[2].forward_stream.blocks[0].first_norm.momentum = None  # a cumulative average
    assert not groupable(nets)
    x = fold_batches()
    stacked = StackedNetworks(copy.deepcopy(nets)).train()
    each = StackedNetworks(copy.deepcopy(nets), grouped=False).train()
    assert torch.equal(stacked(x, FOLDS, SEEDS), each(x, FOLDS, SEEDS))


@pytest.mark.parametrize(
    ("shape", "folds", "seeds", "message"),
    [
        ((2, 6, 20, 39), [0], None, "expected input"),
        ((6, 20, 39), [0], None, "expected input"),
        ((2, 6, 20, 39), [0, 0], None, "distinct"),
        ((2, 6, 20, 39), [0, 3], None, "distinct"),
        ((2, 6, 20, 39), [0, 1], [1], "one seed per fold"),
        ((2, 6, 20, 12), [0, 1], None, "features"),
    ],
)
def test_bad_calls_are_refused(shape, folds, seeds, message) -> None:  # noqa: ANN001
    stacked = StackedNetworks(fold_networks("reference"))
    with pytest.raises(ValueError, match=message):
        stacked(torch.zeros(shape), folds, seeds)


def test_masks_are_the_dropout_modules_own_draws() -> None:
    """Drawn beforehand, each mask is what its dropout module draws on the same generator."""
    from ser.models.reference.masks import draw_stream_masks

    net = fold_networks("reference", branch_regularizer="dropout")[0].train()
    stream = net.forward_stream
    torch.manual_seed(3)
    masks = draw_stream_masks(stream, 4, 7, torch.zeros(()))
    torch.manual_seed(3)
    for branch, mask in zip(stream.fusion.branches, masks.branches, strict=True):
        assert torch.equal(mask, branch.regularizer(torch.ones(4, 39, 7, 39)))
    for block, (first, second) in zip(stream.blocks, masks.blocks, strict=True):
        assert torch.equal(first, block.channel_dropout(torch.ones(4, 39, 1)))
        assert torch.equal(second, block.channel_dropout(torch.ones(4, 39, 1)))
    assert (first == 0).any() and (first != 0).any()
    net.eval()
    assert all(m is None for pair in draw_stream_masks(stream, 4, 7, torch.zeros(())).blocks for m in pair)


def test_mode_changes_are_seen(monkeypatch) -> None:  # noqa: ANN001
    """The grouped computation follows each call's modes: a fold left in eval mode while
    the others train runs the folds one after another, as the loop does."""
    nets = fold_networks("fast")
    stacked = StackedNetworks(copy.deepcopy(nets)).train()
    x = fold_batches()
    stacked(x, FOLDS, SEEDS)
    stacked.nets[2].eval()
    each = StackedNetworks(copy.deepcopy(list(stacked.nets)), grouped=False)
    each.nets[2].eval()
    assert torch.equal(stacked(x, FOLDS, SEEDS), each(x, FOLDS, SEEDS))
