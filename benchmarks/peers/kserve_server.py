"""Serve a sample repository's torch.export models with KServe's Python model server.

Run with the KServe venv (benchmarks/peers/install.sh):
    .venv-kserve/bin/python benchmarks/peers/kserve_server.py REPO MODEL GRPC_PORT HTTP_PORT

The model is written the way KServe documents custom models: a `kserve.Model`
whose synchronous `predict` takes the v2 `InferRequest` and returns an
`InferResponse` (raw output bytes). KServe's Python server has no dynamic
batching, so each request runs alone, on the event loop as KServe calls it.
"""

from __future__ import annotations

import sys

import kserve
import torch
from kserve import InferOutput, InferRequest, InferResponse


class ExportedModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.module: torch.nn.Module | None = None

    def load(self) -> bool:
        self.module = torch.export.load(self.path).module()
        self.ready = True
        return True

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        assert self.module is not None
        x = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.inference_mode():
            y = self.module(x).numpy()
        out = InferOutput(name="OUTPUT", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=True)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[out],
            use_binary_outputs=True,
        )


def main() -> None:
    repo, name, grpc_port, http_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else torch.get_num_threads())
    model = ExportedModel(name, f"{repo}/{name}/1/model.pt2")
    model.load()
    kserve.ModelServer(grpc_port=grpc_port, http_port=http_port, workers=1).start([model])


if __name__ == "__main__":
    main()
