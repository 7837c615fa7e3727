"""The "fast" implementation of MS-SENet / TIM-Net: the reference's function, recomputed.

The reference TFF block materialises (batch, filters, frames, branches * features) several
times (conv outputs, BatchNorm, ReLU, dropout, concatenation, SE scaling), about 220 MB
each at the paper's shape; fresh blocks of that size also pay for page faults. Its TAB
chain runs some 30 small operations per block and reading direction. This package
computes the same function (same parameters, same random numbers) in fewer, larger
operations, in the order a stream runs:

- patches.py: the fusion block's input as patches, their moments (conv = GEMM);
- fusion.py: `FastTimeFrequencyFusion` (conv and BatchNorm folded into the patches' map);
- fused_branches.py: the branches, SE and projection as one autograd Function, in chunks
  of samples, with the C kernels (branches_native.py) or PyTorch operations (branches.py);
  several blocks of one architecture (folds) run as one call on their segments of samples;
- stream.py: `FastDirectionalStream`, both reading directions as two groups of the TAB
  chain, each block one autograd Function: tab_native.py (C kernels) or tab.py (PyTorch),
  with causal_conv.py (dilated convs as GEMMs) and batchnorm.py (grouped BatchNorm);
- grouped.py: several folds' networks (fold stacking) as groups of the same computation.

Tracing, ONNX export and the meta device fall back to the reference computation
(`use_reference`). `FastTimeFrequencyFusion` and `FastDirectionalStream` subclass the
reference modules, so parameter names, initialisation and state dicts are identical.
"""

from ser.models.fast.fusion import DEFAULT_CHUNK, FastTimeFrequencyFusion, use_reference
from ser.models.fast.stream import FastDirectionalStream

__all__ = ["DEFAULT_CHUNK", "FastDirectionalStream", "FastTimeFrequencyFusion", "use_reference"]
