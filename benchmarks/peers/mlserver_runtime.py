"""An MLServer runtime for the samples' torch.export programs (the benchmark's peer).

`mlserver_setup.py` writes a settings folder that points MLServer at this
class; MLServer's own adaptive batching (max_batch_size / max_batch_time in
model-settings.json) and its inference worker pool run it.
"""

from __future__ import annotations

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class ExportedProgram(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri  # type: ignore[union-attr]
        self.module = torch.export.load(uri).module()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = torch.from_numpy(NumpyCodec.decode_input(payload.inputs[0]))
        with torch.inference_mode():
            y = self.module(x).numpy()
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("OUTPUT", y)],
        )
