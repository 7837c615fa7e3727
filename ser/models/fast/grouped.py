"""Several folds' networks of the fast implementation as groups of one computation.

The fast stream already runs MS-SENet's two reading directions as two groups of its fused
TAB operations (stream.py); fold stacking (ser/models/stacked.py) makes every fold's
directions groups too, G = 2F, group g = direction * F + fold, so each of a TAB's fused
kernels and GEMMs runs once for all folds instead of once per fold, and the fusion blocks
of one direction run as one computation on all folds' samples (fusion.py's `project`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ser.models.fast.stream import chain
from ser.models.reference.masks import StreamMasks, draw_network_masks


def fused_level_means(
    nets: Sequence[nn.Module], x: torch.Tensor, masks: Sequence[tuple[StreamMasks, StreamMasks]] | None
) -> torch.Tensor:
    """(F, batch, levels, filters): per fold, the sum of its forward stream's level means on
    x[f] and its backward stream's on x[f] reversed in time (what MSSENet.embed weights)."""
    folds, batch, frames = x.shape[0], x.shape[1], x.shape[2]
    if masks is None:  # eval mode: nothing is drawn
        masks = [draw_network_masks(net, batch, frames, x) for net in nets]
    streams = [[net.forward_stream for net in nets], [net.backward_stream for net in nets]]
    _, means = chain(x, streams, [[m[0] for m in masks], [m[1] for m in masks]])
    # per level (G, batch, filters), g = direction * F + fold -> (F, batch, levels, filters)
    return torch.stack(means, dim=2).view(2, folds, batch, len(means), -1).sum(0)
