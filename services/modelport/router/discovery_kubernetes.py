"""Kubernetes discovery: list + watch EndpointSlices of modelport model Services.

Services labelled `modelport.io/model=<name>` get EndpointSlices that carry
the Service's labels, so one label selector finds every replica of every
model. The loop is the standard informer shape: list (remember the
resourceVersion), watch from there, resume the watch from the last seen
version when the server ends it, and list again on 410 Gone. Only endpoints
whose `ready` condition holds take traffic; one that turns `terminating`
stops receiving new requests at once.

The `kubernetes` client is synchronous, so the loop runs on a daemon thread
and hands each new endpoint list to the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from modelport.router.discovery import OnChange
from modelport.router.replicas import Endpoint

log = logging.getLogger(__name__)

MODEL_LABEL = "modelport.io/model"
GONE = 410


def endpoints_of_slice(slice_: dict[str, Any]) -> list[Endpoint]:
    """The replicas one EndpointSlice describes (raw API JSON)."""
    meta = slice_.get("metadata") or {}
    model = (meta.get("labels") or {}).get(MODEL_LABEL, "")
    ports = slice_.get("ports") or []
    if not model or not ports:
        return []
    chosen = next((p for p in ports if p.get("name") == "grpc"), ports[0])
    port = chosen.get("port")
    if not port:
        return []
    ipv6 = slice_.get("addressType") == "IPv6"
    found = []
    for endpoint in slice_.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        # The API says a missing `ready` means ready; terminating defaults false.
        ready = conditions.get("ready") is not False
        terminating = conditions.get("terminating") is True
        for host in endpoint.get("addresses") or []:
            address = f"[{host}]:{port}" if ipv6 else f"{host}:{port}"
            found.append(Endpoint(model, address, ready=ready, terminating=terminating))
    return found


class KubernetesDiscovery:
    def __init__(
        self,
        namespace: str = "",
        label_selector: str = MODEL_LABEL,
        api_client: Any = None,
        watch_seconds: int = 60,
        retry_seconds: float = 2.0,
    ) -> None:
        self.namespace = namespace
        self.label_selector = label_selector
        self.api_client = api_client
        self.watch_seconds = watch_seconds
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._slices: dict[tuple[str, str], list[Endpoint]] = {}

    def _api(self) -> Any:
        from kubernetes import client, config

        if self.api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self.api_client = client.ApiClient()
        return client.DiscoveryV1Api(self.api_client)

    def _list_call(self, api: Any) -> tuple[Any, tuple[Any, ...]]:
        if self.namespace:
            return api.list_namespaced_endpoint_slice, (self.namespace,)
        return api.list_endpoint_slice_for_all_namespaces, ()

    def _snapshot(self) -> list[Endpoint]:
        merged = [ep for eps in self._slices.values() for ep in eps]
        return sorted(merged, key=lambda e: (e.model, e.address))

    def _relist(self, api: Any) -> str:
        call, args = self._list_call(api)
        response = call(
            *args,
            label_selector=self.label_selector,
            _preload_content=False,
            _request_timeout=self.watch_seconds + 15,
        )
        body = json.loads(response.data)
        self._slices = {}
        for item in body.get("items") or []:
            meta = item.get("metadata") or {}
            self._slices[(meta.get("namespace", ""), meta.get("name", ""))] = endpoints_of_slice(
                item
            )
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _apply_event(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        # The client deserializes `object`; `raw_object` keeps the API's JSON.
        obj = event.get("raw_object") or {}
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind in ("ADDED", "MODIFIED"):
            self._slices[key] = endpoints_of_slice(obj)
            return True
        if kind == "DELETED":
            self._slices.pop(key, None)
            return True
        return False  # BOOKMARK

    def _loop(self, report: OnChange) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        api = None
        resource_version = ""
        while not self._stop.is_set():
            try:
                if api is None:
                    api = self._api()
                if not resource_version:
                    resource_version = self._relist(api)
                    report(self._snapshot())
                watcher = watch.Watch()
                call, args = self._list_call(api)
                # timeout_seconds makes the server end the watch (we resume it)
                # and makes the client raise 410 rather than retry silently.
                for event in watcher.stream(
                    call,
                    *args,
                    label_selector=self.label_selector,
                    resource_version=resource_version,
                    timeout_seconds=self.watch_seconds,
                    allow_watch_bookmarks=True,
                    # A connection that goes silent is dropped and resumed.
                    _request_timeout=self.watch_seconds + 15,
                ):
                    if self._stop.is_set():
                        watcher.stop()
                        break
                    if self._apply_event(event):
                        report(self._snapshot())
                if watcher.resource_version:
                    resource_version = str(watcher.resource_version)
            except ApiException as exc:
                if exc.status == GONE:
                    log.info("kubernetes: watch expired (410 Gone); listing again")
                else:
                    log.warning("kubernetes: API error %s; retrying", exc.status)
                    time.sleep(self.retry_seconds)
                resource_version = ""
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("kubernetes: %s; listing again", exc)
                resource_version = ""
                time.sleep(self.retry_seconds)

    async def run(self, on_change: OnChange) -> None:
        loop = asyncio.get_running_loop()

        def report(endpoints: list[Endpoint]) -> None:
            loop.call_soon_threadsafe(on_change, endpoints)

        self._stop.clear()
        thread = threading.Thread(
            target=self._loop, args=(report,), name="k8s-discovery", daemon=True
        )
        thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()
