"""Several folds' networks computed as one: the contract of fold stacking (`cv.stack`).

The folds of a cross-validation train the same architecture on different rows. Their
parameters are disjoint, so F networks can run as one program: each fold's batch goes
through its own weights, BatchNorm statistics and dropout masks, and each fold computes
what it computes alone, up to floating-point order.

`StackedNetworks` holds the folds' ordinary networks (`MSSENet`/`TIMNet`), so parameters,
buffers, state dicts and checkpoints stay per fold. `forward` takes one batch per
participating fold, all of one batch size; the folds' gradients land in their own
networks' parameters and their BatchNorm running statistics in their own buffers.

Dropout: a fold alone seeds torch's global generator before each training batch
(ser.training.resume.EpochSeeding) and its network draws its masks from it. Here each
participating fold's seed for the batch is passed in `seeds`, and its masks are drawn as
the fold alone would draw them after `torch.manual_seed(seed)`.

This version runs the folds one after another: it is the specification that the
computation of all folds at once must match.

`compiled(mode)`: the same computation under torch.compile (`model.compile`), for the
training steps; here each fold's network compiled as a fold alone compiles it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class StackedNetworks(nn.Module):
    """The networks of several folds, computed together (see the module doc)."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        if not nets:
            raise ValueError("StackedNetworks needs at least one network")
        self.nets = nn.ModuleList(nets)

    def forward(
        self, x: torch.Tensor, folds: Sequence[int], seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Logits (len(folds), batch, classes) of `x` (len(folds), batch, frames, features).

        `folds`: which networks (indices into `nets`) read x[0], x[1], ...; `seeds`: each
        one's dropout seed for this batch (training), or None (draw from the current state).
        """
        return self._each(x, folds, seeds, lambda net, rows: net(rows))

    def embed(self, x: torch.Tensor, folds: Sequence[int]) -> torch.Tensor:
        """The fused vectors z (len(folds), batch, filters) of each fold's network."""
        return self._each(x, folds, None, lambda net, rows: net.embed(rows))

    def compiled(self, mode: str) -> Callable[..., torch.Tensor]:
        """`forward` compiled with torch.compile's `mode`, for training (the same arguments)."""
        networks = {id(net): torch.compile(net, mode=mode) for net in self.nets}

        def compute(net: nn.Module, rows: torch.Tensor) -> torch.Tensor:
            # One graph for every batch size (full batches and an epoch's last, smaller one).
            torch._dynamo.maybe_mark_dynamic(rows, 0)
            return networks[id(net)](rows)

        return lambda x, folds, seeds=None: self._each(x, folds, seeds, compute)

    def _each(self, x, folds, seeds, compute) -> torch.Tensor:
        if x.ndim != 4 or x.shape[0] != len(folds):
            raise ValueError(f"expected input (folds={len(folds)}, batch, frames, features), got {tuple(x.shape)}")
        outputs = []
        for position, fold in enumerate(folds):
            if seeds is None:
                outputs.append(compute(self.nets[fold], x[position]))
                continue
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(seeds[position]))
                outputs.append(compute(self.nets[fold], x[position]))
        return torch.stack(outputs)
