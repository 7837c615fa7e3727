"""The "fast" implementation of MS-SENet / TIM-Net: the reference's function, recomputed.

The reference's function (same parameters, same random numbers) in fewer, larger
operations: patches.py and fusion.py (the fusion block as patch GEMMs), fused_branches.py
(branches, SE and projection as one autograd Function: branches_native.py or branches.py),
stream.py (the TAB chain: tab_native.py or tab.py, causal_conv.py, batchnorm.py) and
grouped.py (fold stacking). Tracing, ONNX export and the meta device fall back to the
reference (`use_reference`). `FastTimeFrequencyFusion` and `FastDirectionalStream`
subclass the reference modules, so parameter names, initialisation and state dicts are
identical. Why, and the map in full: docs/performance.md, section "The fast
implementation's map".
"""

from ser.models.fast.fusion import DEFAULT_CHUNK, FastTimeFrequencyFusion, use_reference
from ser.models.fast.stream import FastDirectionalStream

__all__ = ["DEFAULT_CHUNK", "FastDirectionalStream", "FastTimeFrequencyFusion", "use_reference"]
