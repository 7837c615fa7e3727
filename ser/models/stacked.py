"""Several folds' networks computed as one: the contract of fold stacking (`cv.stack`).

`StackedNetworks` holds the folds' ordinary networks (`MSSENet`/`TIMNet`), so parameters,
buffers, state dicts and checkpoints stay per fold. `forward` takes one batch per
participating fold, all of one batch size; each fold computes what it computes alone, up
to floating-point order, with its own weights, gradients, BatchNorm statistics and dropout
masks (drawn from its seed in `seeds` as the fold alone draws them). `grouped=True`, where
`groupable`, runs them as one grouped network (reference or fast); `grouped=False` one
after another, the specification. Dropout seeding, grouping and `compiled`:
docs/performance.md, section "Fold stacking's contract".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ser.models.fast import FastDirectionalStream, use_reference
from ser.models.fast.grouped import fused_level_means as fast_fused_level_means
from ser.models.networks import MSSENet
from ser.models.reference.grouped import fused_level_means as reference_fused_level_means
from ser.models.reference.layers import BATCH_NORMS, DROPOUTS
from ser.models.reference.masks import StreamMasks, draw_network_masks, seed_generator

FoldMasks = tuple[StreamMasks, StreamMasks]


def _signature(net: nn.Module, modes: bool = True) -> tuple:
    """What two networks must share to be computed as groups of one: the layers, their
    settings (and, with `modes`, train or eval mode), and the parameter shapes."""
    layers = []
    for module in net.modules():
        settings: tuple = (type(module), module.training) if modes else (type(module),)
        if isinstance(module, BATCH_NORMS):
            settings += (module.momentum, module.eps, module.affine, module.track_running_stats)
        elif isinstance(module, DROPOUTS):
            settings += (module.p,)
        layers.append(settings)
    return (tuple(layers), tuple(p.shape for p in net.parameters()))


def groupable(nets: Sequence[nn.Module], modes: bool = True) -> bool:
    """Whether the networks can run as one grouped network: MS-SENet/TIM-Net of one
    architecture, in the same modes (unless `modes` is False), BatchNorm momenta numbers
    (not cumulative averages)."""
    first = nets[0]
    if not isinstance(first, MSSENet):
        return False
    for module in first.modules():
        if isinstance(module, BATCH_NORMS) and module.momentum is None:
            return False
    signature = _signature(first, modes)
    return all(_signature(net, modes) == signature for net in nets[1:])


class StackedNetworks(nn.Module):
    """The networks of several folds, computed together (see the module doc)."""

    def __init__(self, nets: Sequence[nn.Module], grouped: bool = True) -> None:
        super().__init__()
        if not nets:
            raise ValueError("StackedNetworks needs at least one network")
        self.nets = nn.ModuleList(nets)
        self.grouped = grouped
        # whether the architectures of a set of folds match, by the folds' indices: the
        # networks' layers and settings stay as built (their modes are checked per call)
        self._architectures_match: dict[tuple[int, ...], bool] = {}
        # each network's modules, listed once: the modes are read every step
        self._module_lists = [list(net.modules()) for net in self.nets]

    def forward(
        self, x: torch.Tensor, folds: Sequence[int], seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Logits (len(folds), batch, classes) of `x` (len(folds), batch, frames, features).

        `folds`: which networks (indices into `nets`) read x[0], x[1], ...; `seeds`: each
        one's dropout seed for this batch (training), or None (draw from the current state).
        """
        self._check(x, folds, seeds)
        if not self._grouped(folds):
            return self._each(x, folds, seeds, lambda net, rows: net(rows))
        return self.grouped_logits(x, folds, self.draw_masks(x, folds, seeds))

    def embed(self, x: torch.Tensor, folds: Sequence[int]) -> torch.Tensor:
        """The fused vectors z (len(folds), batch, filters) of each fold's network."""
        self._check(x, folds, None)
        if not self._grouped(folds):
            return self._each(x, folds, None, lambda net, rows: net.embed(rows))
        return self.grouped_embed(x, folds, self.draw_masks(x, folds, None))

    def draw_masks(
        self, x: torch.Tensor, folds: Sequence[int], seeds: Sequence[int] | None
    ) -> list[FoldMasks] | None:
        """Each fold's dropout masks for a batch shaped like x[0], drawn as its network alone
        draws them (after `torch.manual_seed(seed)` with seeds, else from the current
        state, fold after fold); None in eval mode. Eager code: a compiled or graph-captured
        step compiles `grouped_logits`, which takes the masks as inputs."""
        if not any(module.training for module in self._module_lists[folds[0]]):
            return None
        batch, frames = x.shape[1], x.shape[2]
        if seeds is None:
            return [draw_network_masks(self.nets[f], batch, frames, x) for f in folds]
        masks = []
        devices = [x.device] if x.device.type == "cuda" else []
        for fold, seed in zip(folds, seeds, strict=True):
            # the dropout functions draw from the global generator: seed it as the fold alone
            # does, and restore it afterwards
            with torch.random.fork_rng(devices=devices):
                seed_generator(seed, x.device)
                masks.append(draw_network_masks(self.nets[fold], batch, frames, x))
        return masks

    def grouped_embed(
        self, x: torch.Tensor, folds: Sequence[int], masks: Sequence[FoldMasks] | None
    ) -> torch.Tensor:
        """z (len(folds), batch, filters) of the folds as one grouped network, with their
        masks from `draw_masks`."""
        nets = [self.nets[f] for f in folds]
        fast = isinstance(nets[0].forward_stream, FastDirectionalStream) and not (
            use_reference(x) or torch.compiler.is_compiling()
        )
        compute = fast_fused_level_means if fast else reference_fused_level_means
        levels = compute(nets, x, masks)  # (F, batch, levels, filters)
        weights = torch.stack([net.level_weighting.weight for net in nets])
        return torch.einsum("fblc,fl->fbc", levels, weights)

    def grouped_logits(
        self, x: torch.Tensor, folds: Sequence[int], masks: Sequence[FoldMasks] | None
    ) -> torch.Tensor:
        """Logits (len(folds), batch, classes) of the folds as one grouped network."""
        z = self.grouped_embed(x, folds, masks)
        classifiers = [self.nets[f].classifier for f in folds]
        weight = torch.stack([c.weight for c in classifiers])
        bias = torch.stack([c.bias for c in classifiers])
        return torch.baddbmm(bias[:, None], z, weight.transpose(1, 2))

    def compiled(self, mode: str) -> Callable[..., torch.Tensor]:
        """`forward` (the same arguments) compiled with torch.compile's `mode`, for training."""
        grouped = torch.compile(self.grouped_logits, mode=mode)
        networks = {id(net): torch.compile(net, mode=mode) for net in self.nets}

        def alone(net: nn.Module, rows: torch.Tensor) -> torch.Tensor:
            # One graph for every batch size (full batches and an epoch's last, smaller one);
            # torch._dynamo's function, as ser.training.module says (no torch.compiler one).
            torch._dynamo.maybe_mark_dynamic(rows, 0)
            return networks[id(net)](rows)

        def forward(x: torch.Tensor, folds: Sequence[int], seeds: Sequence[int] | None = None) -> torch.Tensor:
            self._check(x, folds, seeds)
            if not self._grouped(folds):
                return self._each(x, folds, seeds, alone)
            return grouped(x, folds, self.draw_masks(x, folds, seeds))

        return forward

    def _grouped(self, folds: Sequence[int]) -> bool:
        if not self.grouped:
            return False
        nets = [self.nets[f] for f in folds]
        key = tuple(folds)
        if key not in self._architectures_match:
            self._architectures_match[key] = groupable(nets, modes=False)
        if not self._architectures_match[key]:
            return False
        modes = self._modes(folds[0])
        return all(self._modes(fold) == modes for fold in folds[1:])

    def _modes(self, fold: int) -> list[bool]:
        return [module.training for module in self._module_lists[fold]]

    def _check(self, x: torch.Tensor, folds: Sequence[int], seeds: Sequence[int] | None) -> None:
        if x.ndim != 4 or x.shape[0] != len(folds) or not folds:
            raise ValueError(f"expected input (folds={len(folds)}, batch, frames, features), got {tuple(x.shape)}")
        if len(set(folds)) != len(folds) or not all(0 <= f < len(self.nets) for f in folds):
            raise ValueError(f"folds must be distinct indices below {len(self.nets)}, got {list(folds)}")
        features = self.nets[folds[0]].input_dim
        if x.shape[3] != features:
            raise ValueError(f"expected {features} features per frame, got {x.shape[3]}")
        if seeds is not None and len(seeds) != len(folds):
            raise ValueError(f"expected one seed per fold ({len(folds)}), got {len(seeds)}")

    def _each(self, x, folds, seeds, compute) -> torch.Tensor:  # noqa: ANN001
        """The specification: each fold's network alone, one after another."""
        outputs = []
        for position, fold in enumerate(folds):
            if seeds is None:
                outputs.append(compute(self.nets[fold], x[position]))
                continue
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                seed_generator(seeds[position], x.device)
                outputs.append(compute(self.nets[fold], x[position]))
        return torch.stack(outputs)
