"""Write an MLServer settings folder serving MODEL from a sample repository.

    python benchmarks/peers/mlserver_setup.py REPO MODEL GRPC_PORT HTTP_PORT OUT_DIR
    .venv-mlserver/bin/mlserver start OUT_DIR

Adaptive batching is set like modelport's sample config (max_batch_size and the
queue delay of config.pbtxt), so both servers may form the same batches.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path


def main() -> None:
    repo, name, grpc_port, http_port, out = sys.argv[1:6]
    config = (Path(repo) / name / "config.pbtxt").read_text()
    max_batch = int(re.search(r"max_batch_size:\s*(\d+)", config).group(1))  # type: ignore[union-attr]
    delay = re.search(r"max_queue_delay_microseconds:\s*(\d+)", config)
    folder = Path(out)
    (folder / name).mkdir(parents=True, exist_ok=True)
    shutil.copy(
        Path(__file__).with_name("mlserver_runtime.py"), folder / name / "mlserver_runtime.py"
    )
    settings = {
        "grpc_port": int(grpc_port),
        "http_port": int(http_port),
        "metrics_port": 0,
        "debug": False,
        "host": "127.0.0.1",
        "grpc_max_message_length": 64 << 20,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": name,
        "implementation": "mlserver_runtime.ExportedProgram",
        "max_batch_size": max_batch,
        "max_batch_time": (int(delay.group(1)) if delay else 0) / 1e6,
        "parameters": {"uri": str(Path(repo).resolve() / name / "1" / "model.pt2")},
    }
    (folder / name / "model-settings.json").write_text(json.dumps(model))


if __name__ == "__main__":
    main()
