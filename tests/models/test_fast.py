"""The "fast" implementation computes the reference's function, gradients and training.

Both implementations draw their dropout masks in the same order with the same calls, so
with equal seeds train mode compares exactly too (dropout on). Gradients are compared
per tensor as relative errors ||fast - ref|| / ||ref||. The reference run in float64
gives the exact values. In fp32 every output and gradient is within 1e-4 of the fp32
reference, except where the fp32 reference is itself that far from the exact value (some
bias gradients sum thousands of cancelling terms): there the fast result must be about as
close to the exact value (within 1.5 times the reference's error, or within 1e-4 of it):
two float32 summation orders of such a sum land either side of each other by chance. In fp64 the two agree to ~1e-10. In train mode a conv followed
by batch-statistics BatchNorm has an exactly zero bias gradient; both implementations
return rounding noise there, so those are compared against the scale of the conv weight's
gradient instead.
"""

from __future__ import annotations

import io

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ser.models import (
    IMPLEMENTATIONS,
    FastDirectionalStream,
    FastTimeFrequencyFusion,
    MSSENet,
    TimeFrequencyFusion,
    TIMNet,
)
from ser.models.fast.patches import patch_moments, patches
from tests.helpers.config import ROOT
from tests.helpers.implementations import (
    ABLATIONS,
    BATCH,
    FEATURES,
    FRAMES,
    compare_fp32,
    compare_fp64,
    features,
    mssenet,
    one_thread,  # noqa: F401 (an autouse fixture)
    pair,
    relative_error,
)


def test_fast_is_registered() -> None:
    assert IMPLEMENTATIONS["fast"].fusion is FastTimeFrequencyFusion
    assert IMPLEMENTATIONS["fast"].stream is FastDirectionalStream
    model = MSSENet(num_classes=7, implementation="fast")
    assert isinstance(model.forward_stream, FastDirectionalStream)
    assert isinstance(model.backward_stream.fusion, FastTimeFrequencyFusion)
    assert isinstance(TIMNet(num_classes=7, implementation="fast").forward_stream,
                      FastDirectionalStream)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("overrides", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_outputs_gradients_and_statistics_match_reference(overrides: dict, train: bool) -> None:
    reference, fast = pair(mssenet, **overrides)
    x = features()
    compare_fp64(reference, fast, x, train)  # on copies: the models keep their statistics
    compare_fp32(reference, fast, x, train)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_timnet_matches_reference(train: bool) -> None:
    reference, fast = pair(TIMNet, num_classes=4, num_blocks=4)
    compare_fp32(reference, fast, features(), train)


def test_dilation_beyond_the_sequence_and_other_sizes() -> None:
    # 6 frames, dilations up to 8: the past tap of the later TABs sees only padding.
    torch.manual_seed(3)
    x = torch.randn(5, 6, 20)
    reference, fast = pair(mssenet, input_dim=20, filters=16, num_blocks=4)
    compare_fp64(reference, fast, x, train=True)
    compare_fp32(reference, fast, x, train=True)


def test_chunking_does_not_change_the_result() -> None:
    torch.manual_seed(0)
    reference = TimeFrequencyFusion()
    x = features(batch=7, frames=20)
    outputs = []
    for chunk in (1, 3, 7, 16):
        fast = FastTimeFrequencyFusion(chunk=chunk)
        fast.load_state_dict(reference.state_dict())
        torch.manual_seed(4)
        outputs.append(fast.train()(x))
    torch.manual_seed(4)
    expected = reference.train()(x)
    for out in outputs:
        assert relative_error(out, expected) <= 1e-5


def test_patches_and_their_moments() -> None:
    """Patches are the unfolded image; moments are taken per segment of samples (folds)."""
    x = features(batch=4, frames=9).double()
    shift = x.mean()
    for kernel in ((11, 1), (1, 9), (3, 3)):
        p = patches(x, kernel, shift)
        unfolded = nn.functional.unfold(
            x.unsqueeze(1), kernel, padding=(kernel[0] // 2, kernel[1] // 2)
        )
        assert torch.allclose(p[:, :-1] + shift, unfolded, rtol=1e-12, atol=1e-10)
        assert torch.all(p[:, -1] == 1)
        for segments in (1, 2):
            mean, covariance = patch_moments(p, segments)
            assert mean.shape[0] == covariance.shape[0] == segments
            for segment, part in enumerate(unfolded.chunk(segments)):
                flat = part.transpose(1, 2).reshape(-1, part.shape[1])
                assert torch.allclose(covariance[segment, :-1, :-1], flat.T.cov(correction=0), rtol=1e-9)
                assert torch.allclose(mean[segment, :-1] + shift, flat.mean(0), rtol=1e-9)


def test_state_dicts_load_across_implementations() -> None:
    torch.manual_seed(1)
    reference = mssenet().train()
    reference(features())  # move the BatchNorm statistics away from their start
    fast = mssenet(implementation="fast")
    assert fast.state_dict().keys() == reference.state_dict().keys()
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    buffer.seek(0)
    fast.load_state_dict(torch.load(buffer, weights_only=True))
    x = features(seed=2)
    with torch.no_grad():
        expected = reference.eval()(x)
        assert relative_error(fast.eval()(x), expected) <= 1e-5
        back = mssenet()
        back.load_state_dict(fast.state_dict())
        assert torch.equal(back.eval()(x), expected)


def test_level_outputs_agree_with_embedding() -> None:
    reference, fast = pair(mssenet)
    x = features()
    with torch.no_grad():
        ref_levels = reference.eval().level_outputs(x)
        fast_levels = fast.eval().level_outputs(x)
        for a, b in zip(fast_levels, ref_levels, strict=True):
            assert a.shape == b.shape == (BATCH, 3, 39, FRAMES)
            assert relative_error(a, b) <= 1e-5
        assert relative_error(fast.embed(x), reference.embed(x)) <= 1e-5


def test_training_matches_reference() -> None:
    """Same tiny data, seed and optimiser: the same loss trajectory and accuracy."""
    generator = torch.Generator().manual_seed(0)
    classes, per_class, frames = 3, 16, 30
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = torch.randn(len(labels), frames, FEATURES, generator=generator) * 3
    x[:, :, :classes] += 4.0 * nn.functional.one_hot(labels, classes)[:, None, :]
    histories = {}
    for implementation in ("reference", "fast"):
        torch.manual_seed(0)
        model = MSSENet(num_classes=classes, num_blocks=2, implementation=implementation)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.93, 0.98))
        order = torch.Generator().manual_seed(1)
        losses = []
        for _epoch in range(4):
            model.train()
            for batch in torch.randperm(len(labels), generator=order).split(16):
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(
                    model(x[batch]), labels[batch], label_smoothing=0.1
                )
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
        with torch.no_grad():
            accuracy = (model.eval()(x).argmax(1) == labels).float().mean().item()
        histories[implementation] = (torch.tensor(losses), accuracy)
    (ref_losses, ref_accuracy), (fast_losses, fast_accuracy) = histories.values()
    assert ref_losses[-1] < ref_losses[0]  # it learns
    assert torch.allclose(fast_losses, ref_losses, rtol=1e-3, atol=1e-4)
    assert abs(fast_accuracy - ref_accuracy) <= 1 / len(labels)


def test_configs_default_to_auto() -> None:
    """`auto`: fast on CPUs, the measured choice elsewhere (tests/training/test_implementation.py)."""
    for name in ("mssenet", "timnet"):
        config = OmegaConf.load(ROOT / "ser" / "conf" / "model" / f"{name}.yaml")
        assert config.model.net.implementation == "auto"  # model files: @package _global_


@pytest.mark.gpu
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_fast_matches_reference_on_cuda(train: bool) -> None:
    """On a GPU the fast implementation runs its PyTorch formulation (the C kernels are for
    CPUs): the same function and gradients as the reference there too."""
    reference, fast = pair(mssenet)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        compare_fp32(reference.cuda(), fast.cuda(), features().cuda(), train)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def test_pool_squeeze_weights_match_the_pool() -> None:
    frames, features = 5, 4
    fusion = FastTimeFrequencyFusion(input_dim=features, branch_regularizer="avgpool")
    q = fusion._pool_squeeze_weights(frames, features, "cpu", torch.float64)
    image = torch.randn(1, 1, frames, features, dtype=torch.float64)
    pooled = fusion.branches[0].regularizer(image)
    assert torch.allclose(pooled.sum(), (q * image.flatten()).sum(), rtol=1e-12)
