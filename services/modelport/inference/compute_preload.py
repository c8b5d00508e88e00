"""Imported once by the compute forkserver, so that every compute process forked
from it starts with what loading a model needs already imported.

torch itself takes seconds to import, and `torch.export.load` pulls in its
serializer (sympy, the FX passes) on first use: another 6 s here. Imported
before the fork, both are shared by every compute process (copy-on-write).
"""

from __future__ import annotations

import torch
import torch._export.serde.serialize
import torch.export
import torch.fx

__all__ = ["torch"]
