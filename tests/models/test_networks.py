"""Shapes, parameter counts, Keras settings, causality and ablations of `ser.models`."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from ser.models import (
    IMPLEMENTATIONS,
    DirectionalStream,
    LevelWeighting,
    MSSENet,
    SamePaddingAveragePool2d,
    SqueezeExcitation,
    TemporalAwareBlock,
    TimeFrequencyFusion,
    TIMNet,
    implementation,
    keras_initialise,
)
from ser.models.reference.layers import BATCH_NORMS
from tests.helpers.implementations import SWITCHES

BATCH, FRAMES, FEATURES = 2, 24, 39

# Trainable parameters with filters F = 39, n TABs, C classes (Keras reports the same):
#   TFF per direction: convs (11,1) 39*11+39 = 468, (1,9) 39*9+39 = 390, (3,3) 390;
#     3 BatchNorms 3*2*39 = 234; SE 2*(39*39+39) = 3120; 1x1 conv 39+1 = 40  -> 4642
#   pointwise Conv1d 156 -> 39: 156*39+39 = 6123 (TIM-Net: 39 -> 39, 1560)
#   TAB: 2 * (39*39*2 + 39) conv + 2 * 2*39 BN = 6318
#   MS-SENet, n = 10: 2 * (4642 + 6123 + 10*6318) + 10 level weights + 39*7+7 = 148180
#   TIM-Net,  n = 8:  2 * (1560 + 8*6318) + 8 + 280 = 104496
# BatchNorm moving statistics (mean + var) for MS-SENet: 2 * (3*78 + 10*2*78) = 3588.
MSSENET_PARAMETERS = 148_180
MSSENET_BATCH_NORM_STATISTICS = 3_588
TIMNET_PARAMETERS = 104_496
SE_PARAMETERS_PER_DIRECTION = 2 * (39 * 39 + 39)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def modules_of(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.fixture
def features() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(BATCH, FRAMES, FEATURES)


ABLATIONS = {
    **SWITCHES,
    "four_blocks": {"num_blocks": 4},
    "no_fusion": {"time_frequency_fusion": False},
}


@pytest.mark.parametrize("overrides", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_mssenet_shapes_for_every_ablation(features: torch.Tensor, overrides: dict) -> None:
    model = MSSENet(num_classes=7, **overrides)
    assert model(features).shape == (BATCH, 7)
    assert model.embed(features).shape == (BATCH, 39)
    forward_levels, backward_levels = model.level_outputs(features)
    levels = overrides.get("num_blocks", 10)
    assert forward_levels.shape == backward_levels.shape == (BATCH, levels, 39, FRAMES)


def test_timnet_shapes(features: torch.Tensor) -> None:
    model = TIMNet(num_classes=4, num_blocks=3)
    assert model(features).shape == (BATCH, 4)
    assert model.embed(features).shape == (BATCH, 39)
    assert not modules_of(model, TimeFrequencyFusion)


def test_other_input_and_filter_sizes() -> None:
    x = torch.randn(3, 17, 20)
    assert MSSENet(num_classes=5, input_dim=20, filters=16, num_blocks=3)(x).shape == (3, 5)
    assert TIMNet(num_classes=5, input_dim=20, filters=16, num_blocks=3)(x).shape == (3, 5)


def test_wrong_input_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="frames, 39"):
        TIMNet(num_classes=7, num_blocks=2)(torch.randn(2, 10, 40))


def test_parameter_counts_match_keras() -> None:
    model = MSSENet(num_classes=7)
    assert trainable_parameters(model) == MSSENET_PARAMETERS
    statistics = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in modules_of(model, BATCH_NORMS)
    )
    assert statistics == MSSENET_BATCH_NORM_STATISTICS
    assert trainable_parameters(TIMNet(num_classes=7, num_blocks=8)) == TIMNET_PARAMETERS


def test_keras_matching_settings() -> None:
    torch.manual_seed(0)
    model = MSSENet(num_classes=7)
    norms = modules_of(model, BATCH_NORMS)
    assert len(norms) == 2 * (3 + 2 * 10)
    for norm in norms:
        assert norm.momentum == 0.01 and norm.eps == 1e-3
    for layer in (
        modules_of(model, nn.Conv1d) + modules_of(model, nn.Conv2d) + modules_of(model, nn.Linear)
    ):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        largest = layer.weight.abs().max().item()
        assert largest <= bound
        if layer.weight.numel() >= 1000:  # glorot, not PyTorch's smaller default bound
            assert largest > 0.9 * bound
        assert torch.count_nonzero(layer.bias) == 0
    (weighting,) = modules_of(model, LevelWeighting)
    assert weighting.weight.shape == (10,)
    assert weighting.weight.abs().max() <= 0.05


def test_keras_initialise_resets_layers() -> None:
    layer = nn.Linear(50, 50)
    nn.init.constant_(layer.bias, 1.0)
    norm = nn.BatchNorm1d(4)
    keras_initialise(nn.Sequential(layer, norm))
    assert torch.count_nonzero(layer.bias) == 0
    assert (norm.momentum, norm.eps) == (0.01, 1e-3)


def _assert_levels_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_timnet_forward_stream_is_causal(features: torch.Tensor) -> None:
    # Eval mode: BatchNorm uses its running statistics, so it is per-frame; in train mode
    # the batch statistics would mix frames. TIM-Net has no TFF block, whose 'same' convs
    # and SE time mean make MS-SENet's streams non-causal by design.
    model = TIMNet(num_classes=7, num_blocks=4).eval()
    t = 10
    changed = features.clone()
    changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
    with torch.no_grad():
        before, _ = model.level_outputs(features)
        after, _ = model.level_outputs(changed)
    _assert_levels_equal(before[..., : t + 1], after[..., : t + 1])
    assert not torch.allclose(before[..., t + 1 :], after[..., t + 1 :])


def test_timnet_backward_stream_is_causal_in_reversed_time(features: torch.Tensor) -> None:
    # The backward stream reads the input reversed: its index i is original frame T-1-i,
    # so changing frames before t leaves reversed indices 0 .. T-1-t unchanged.
    model = TIMNet(num_classes=7, num_blocks=4).eval()
    t = 10
    changed = features.clone()
    changed[:, :t] = torch.randn_like(changed[:, :t])
    with torch.no_grad():
        _, before = model.level_outputs(features)
        _, after = model.level_outputs(changed)
    kept = FRAMES - t
    _assert_levels_equal(before[..., :kept], after[..., :kept])
    assert not torch.allclose(before[..., kept:], after[..., kept:])


def test_mssenet_tab_chain_is_causal(features: torch.Tensor) -> None:
    # The TAB chain after the (non-causal) fusion block is causal on its own input.
    model = MSSENet(num_classes=7, num_blocks=4).eval()
    stream = model.forward_stream
    fused = stream.fusion(features).detach()
    stream.fusion = None  # feed the pointwise conv + TAB chain directly
    t = 12
    changed = fused.clone()
    changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
    with torch.no_grad():
        _assert_levels_equal(stream(fused)[..., : t + 1], stream(changed)[..., : t + 1])


def test_temporal_aware_block_receptive_field() -> None:
    # Two convs of kernel 2 and dilation d reach 2*d frames into the past.
    block = TemporalAwareBlock(channels=3, dilation=4, dropout=0.1).eval()
    x = torch.randn(1, 3, 20)
    changed = x.clone()
    changed[..., 5] += 1.0
    with torch.no_grad():
        difference = (block(x) - block(changed)).abs().sum(dim=1)[0]
    assert torch.all(difference[:5] == 0)
    assert torch.all(difference[14:] == 0)
    assert difference[13] > 0


def test_square_kernel_ablation() -> None:
    model = MSSENet(num_classes=7, kernel_sizes=((3, 3),))
    fusion = model.forward_stream.fusion
    assert len(fusion.branches) == 1
    assert fusion.branches[0].conv.kernel_size == (3, 3)
    assert fusion(torch.randn(BATCH, FRAMES, FEATURES)).shape == (BATCH, FRAMES, 2 * FEATURES)
    assert model.forward_stream.pointwise.in_channels == 2 * FEATURES


def test_se_ablation_removes_exactly_the_se_layers() -> None:
    model = MSSENet(num_classes=7, squeeze_excitation=False)
    assert not modules_of(model, SqueezeExcitation)
    assert len(modules_of(MSSENet(num_classes=7), SqueezeExcitation)) == 2
    assert trainable_parameters(model) == MSSENET_PARAMETERS - 2 * SE_PARAMETERS_PER_DIRECTION


def test_avgpool_ablation_pools_instead_of_dropping() -> None:
    model = MSSENet(num_classes=7, branch_regularizer="avgpool")
    assert len(modules_of(model, nn.AvgPool2d)) == 2 * 3
    assert not modules_of(model, nn.Dropout2d) and not modules_of(model, nn.Dropout)


def test_same_padding_average_pool_matches_keras() -> None:
    # Keras 'same', pool 2, stride 1: window x[i:i+2, j:j+2], padding excluded from the mean.
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    pooled = SamePaddingAveragePool2d()(x)
    assert pooled.shape == x.shape
    image = x[0, 0]
    for i in range(3):
        for j in range(4):
            assert pooled[0, 0, i, j] == image[i : i + 2, j : j + 2].mean()


def test_dropout_ablation_uses_elementwise_dropout() -> None:
    model = MSSENet(num_classes=7, branch_regularizer="dropout", branch_rate=0.3)
    branch_dropouts = [b.regularizer for b in model.forward_stream.fusion.branches]
    assert all(type(d) is nn.Dropout and d.p == 0.3 for d in branch_dropouts)
    assert not modules_of(model, nn.Dropout2d)


def test_default_branches_use_spatial_dropout() -> None:
    model = MSSENet(num_classes=7)
    branch_dropouts = [b.regularizer for b in model.forward_stream.fusion.branches]
    assert all(type(d) is nn.Dropout2d and d.p == 0.2 for d in branch_dropouts)
    tab_dropouts = modules_of(model.forward_stream.blocks, nn.Dropout1d)
    assert len(tab_dropouts) == 10 and all(d.p == 0.1 for d in tab_dropouts)


def test_num_blocks_sets_tabs_and_level_weights() -> None:
    for num_blocks in (3, 6):
        model = MSSENet(num_classes=7, num_blocks=num_blocks)
        blocks = modules_of(model, TemporalAwareBlock)
        assert len(blocks) == 2 * num_blocks
        dilations = [b.first_conv.dilation[0] for b in model.forward_stream.blocks]
        assert dilations == [2**j for j in range(num_blocks)]
        assert model.level_weighting.weight.shape == (num_blocks,)


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="odd"):
        MSSENet(num_classes=7, kernel_sizes=((2, 3),))
    with pytest.raises(ValueError, match="branch_regularizer"):
        MSSENet(num_classes=7, branch_regularizer="maxpool")
    with pytest.raises(ValueError, match="implementation 'nope'"):
        MSSENet(num_classes=7, implementation="nope")
    with pytest.raises(ValueError, match="implementation"):
        TIMNet(num_classes=7, implementation="nope")
    with pytest.raises(ValueError, match="reduction"):
        SqueezeExcitation(4, reduction=8)


def test_implementation_registry() -> None:
    assert implementation("reference").fusion is TimeFrequencyFusion
    assert IMPLEMENTATIONS["reference"].stream is DirectionalStream


def test_state_dict_round_trip(features: torch.Tensor) -> None:
    torch.manual_seed(1)
    model = MSSENet(num_classes=7, num_blocks=3)
    model.train()
    model(features)  # move the BatchNorm running statistics away from their start
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(2)
    restored = MSSENet(num_classes=7, num_blocks=3).eval()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(restored(features), model(features), rtol=0, atol=0)


def test_dropout_only_in_train_mode(features: torch.Tensor) -> None:
    model = MSSENet(num_classes=7, num_blocks=3)
    model.train()
    torch.manual_seed(3)
    first = model(features)
    second = model(features)
    assert not torch.allclose(first, second)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(features), model(features), rtol=0, atol=0)
