"""Reading a `/metrics` page back: for tests, and for load tests that explain their numbers.

Parsed with prometheus_client's text parser, so what passes here is what
Prometheus itself accepts.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str  # the sample's own name: modelport_x_total, modelport_y_seconds_sum, ...
    labels: Mapping[str, str]
    value: float


class Scrape:
    """One parsed page: samples by name, summed over label sets that match a filter."""

    def __init__(self, *texts: str) -> None:
        """Parse one page, or several (replicas) whose samples then add up in `total`."""
        self.samples: list[Sample] = []
        self.types: dict[str, str] = {}
        self.help: dict[str, str] = {}  # family -> its HELP text
        for family in (f for text in texts for f in text_string_to_metric_families(text)):
            self.types[family.name] = family.type
            self.help[family.name] = family.documentation
            for sample in family.samples:
                self.samples.append(Sample(sample.name, dict(sample.labels), sample.value))

    def total(self, name: str, **labels: str) -> float:
        """Sum of `name` over every label set containing `labels` (0 when absent)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def metrics_url(address: str) -> str:
    """host:port, http://host:port or a full URL -> the /metrics URL (http or https only)."""
    url = address if "://" in address else f"http://{address}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{address!r}: metrics are scraped over http(s)")
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    return url


def fetch(address: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(metrics_url(address), timeout=timeout_s) as response:
        return str(response.read().decode())


def scrape(*addresses: str, timeout_s: float = 5.0) -> Scrape:
    """GET and parse one or more `/metrics` pages (e.g. every replica of a model)."""
    return Scrape(*(fetch(address, timeout_s) for address in addresses))
