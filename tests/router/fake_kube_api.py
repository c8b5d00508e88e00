"""A stand-in for the Kubernetes API server: EndpointSlice list and watch only.

It serves `GET /apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices` the way
the real API server does for what the router uses: a list answer carries
`metadata.resourceVersion`; `?watch=true&resourceVersion=N` streams one JSON
event per line (chunked) for changes after N until `timeoutSeconds`; a watch
from a version older than the retained history gets an ERROR event with code
410 (Gone), as after etcd compaction. Label selectors: `key` and `key=value`.
The real `kubernetes` client talks to it through a `Configuration(host=...)`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/apis/discovery.k8s.io/v1/namespaces/"


def endpoint_slice(
    name: str, model: str, host: str, port: int, *, ready: bool = True, terminating: bool = False
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "models",
            "labels": {"modelport.io/model": model, "kubernetes.io/service-name": model},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [host],
                "conditions": {"ready": ready, "serving": True, "terminating": terminating},
            }
        ],
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
    }


def _matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, selector.split(",")):
        key, sep, value = term.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


class FakeEndpointSliceApi:
    def __init__(self) -> None:
        self.version = 100
        self.slices: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.oldest = 100  # watches from before this version get 410 Gone
        self.lists = 0
        self.changed = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        with self.changed:
            self.version += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self.version)
            if kind == "DELETED":
                self.slices.pop(obj["metadata"]["name"], None)
            else:
                self.slices[obj["metadata"]["name"]] = obj
            self.history.append((self.version, kind, obj))
            self.changed.notify_all()

    def put(self, obj: dict[str, Any]) -> None:
        self._record("MODIFIED" if obj["metadata"]["name"] in self.slices else "ADDED", obj)

    def delete(self, name: str) -> None:
        self._record("DELETED", self.slices[name])

    def put_behind_compaction(self, obj: dict[str, Any]) -> None:
        """A change the watchers miss: history is compacted past it, so open
        watches get 410 Gone and only a new list shows the change."""
        with self.changed:
            self._record("MODIFIED" if obj["metadata"]["name"] in self.slices else "ADDED", obj)
            self.history.clear()
            self.oldest = self.version + 1
            self.changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if not (url.path.startswith(PREFIX) and url.path.endswith("/endpointslices")):
                    self.send_error(404)
                    return
                selector = query.get("labelSelector", "")
                if query.get("watch") in ("true", "1", "True"):
                    self._watch(selector, int(query.get("resourceVersion") or 0), query)
                else:
                    self._list(selector)

            def _list(self, selector: str) -> None:
                with api.changed:
                    api.lists += 1
                    items = [
                        s
                        for s in api.slices.values()
                        if _matches(selector, s["metadata"]["labels"])
                    ]
                    body = {
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSliceList",
                        "metadata": {"resourceVersion": str(api.version)},
                        "items": items,
                    }
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, event: dict[str, Any]) -> None:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()

            def _watch(self, selector: str, since: int, query: dict[str, str]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                until = time.monotonic() + float(query.get("timeoutSeconds") or 30)
                try:
                    while time.monotonic() < until:
                        with api.changed:
                            if since < api.oldest - 1:
                                gone = {
                                    "kind": "Status",
                                    "code": 410,
                                    "reason": "Expired",
                                    "message": f"too old resource version: {since}",
                                }
                                self._chunk({"type": "ERROR", "object": gone})
                                break
                            events = [e for e in api.history if e[0] > since]
                            if not events:
                                api.changed.wait(min(0.2, max(0.0, until - time.monotonic())))
                                continue
                        for version, kind, obj in events:
                            since = version
                            if _matches(selector, obj["metadata"]["labels"]):
                                self._chunk({"type": kind, "object": obj})
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
