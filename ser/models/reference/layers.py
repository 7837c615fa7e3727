"""The kinds of BatchNorm and dropout layer the networks build, by their public classes.

torch groups these under private bases (``nn.modules.batchnorm._BatchNorm``,
``nn.modules.dropout._DropoutNd``); naming the public classes keeps the package off
torch's private API.
"""

from __future__ import annotations

from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# element dropout (nn.Dropout) and channel dropouts; AlphaDropout draws otherwise
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm
