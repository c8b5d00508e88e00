"""A real registry gRPC server on its own event-loop thread, for tests with sync clients."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from modelport.registry.server import RegistryServer, RegistrySettings


class ThreadedRegistry:
    """A real registry gRPC server on its own event loop thread (for sync clients)."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.server = RegistryServer(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        self.address = self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def registry_settings(tmp_path: Path, database: str = "") -> RegistrySettings:
    return RegistrySettings(
        database=database or f"sqlite:///{tmp_path / 'registry.db'}",
        blob_dir=tmp_path / "blobs",
        max_upload_mb=8,
        host="127.0.0.1",
        grpc_port=0,
    )
