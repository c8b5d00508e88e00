"""CUDA shared memory: declared by the protocol, not offered by modelport.

Registering a CUDA IPC handle is answered UNAVAILABLE with the reason (no GPU
on this server, or the feature not offered where there is one); status lists
no region and unregistering is a no-op, so a client that clears regions before
using system shared memory (as Triton's examples do) goes on unharmed.
"""

from __future__ import annotations

from modelport.errors import NotFound, Unavailable


class CudaSharedMemory:
    def status(self, name: str = "") -> list[object]:
        if name:
            raise NotFound(f"Unable to find cuda shared memory region: '{name}'")
        return []

    def register(self, name: str) -> None:
        import torch

        why = (
            "this server has no CUDA device"
            if not torch.cuda.is_available()
            else "modelport does not map CUDA IPC handles"
        )
        raise Unavailable(
            f"failed to register CUDA shared memory region '{name}': {why}; pass tensors "
            "through system shared memory or in the request"
        )

    def unregister(self, name: str = "") -> None:
        return None
