"""Short, bounded load tests against a real OIP server on loopback.

Each run is a second or two; the numbers checked are the report's own
consistency (counts add up, percentiles ordered, errors classified by status)
and what the server saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from modelport.client.codec import build_request
from modelport.loadtest.runner import LoadSpec, run_load
from modelport.loadtest.session import SessionOptions, run_session

from tests.loadtest.checks import check_consistent
from tests.support.toy_oip_server import toy_server_in_thread

pytestmark = pytest.mark.timeout(90)


def short_run(address: str, model: str, **options: object) -> tuple[dict, bool]:
    """A sub-second run with one load process, unless the test says otherwise."""
    settings: dict = {"duration_s": 0.6, "warmup_s": 0.1, "processes": 1, "live": False}
    settings.update(options)
    return run_session(SessionOptions(url=address, model=model, **settings))


def test_closed_loop_report_adds_up_and_plots(tmp_path: Path) -> None:
    with toy_server_in_thread() as (address, servicer):
        report, passed = run_session(
            SessionOptions(
                url=address,
                model="simple",
                random=True,
                shapes={"INPUT0": [2, 16], "INPUT1": [2, 16]},
                concurrency=4,
                duration_s=1.0,
                warmup_s=0.3,
                processes=2,
                report_path=tmp_path / "report.json",
                plot_path=tmp_path / "run.png",
                live=False,
            )
        )
        served = servicer.infer_count
    assert passed and report["passed"]
    check_consistent(report)
    assert report["requests"]["ok"] > 50 and report["requests"]["errors"] == 0
    # Warm-up and measured requests all reached the server; only the window is reported.
    assert served >= report["requests"]["total"]
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_counted_by_status_and_fail_the_run(tmp_path: Path) -> None:
    """Half the requests name an input the model lacks: INVALID_ARGUMENT, counted apart."""
    good = {"INPUT0": [1] * 16, "INPUT1": [2] * 16}
    bad = {"WRONG": [1] * 16}
    data = tmp_path / "requests.json"
    data.write_text(json.dumps({"data": [good, bad]}))
    with toy_server_in_thread() as (address, _):
        report, passed = short_run(
            address, "simple", requests_json=data, concurrency=2, max_error_rate=0.2
        )
    check_consistent(report)
    assert set(report["errors_by_status"]) == {"INVALID_ARGUMENT"}
    # One caller per request variant, each cycling the list: about half fail.
    assert 0.3 < report["error_rate"] < 0.7
    assert not passed and "error rate" in report["failures"][0]


def test_open_loop_sends_on_schedule_and_counts_from_it() -> None:
    with toy_server_in_thread() as (address, _):
        report, passed = short_run(
            address, "slow", random=True, rate=200.0, duration_s=1.0, warmup_s=0.2, processes=2
        )
    assert passed
    check_consistent(report)
    # A fixed schedule: exactly rate x duration requests are due in the window.
    assert abs(report["requests"]["total"] - 200) <= 1
    assert report["offered_rps"] == pytest.approx(200, abs=1)
    assert report["latency_ms"]["min"] >= 5.0  # the model sleeps 5 ms
    assert report["mode"] == "open" and report["generator"]["schedule_lag_ms"]["p99"] < 50


def test_open_loop_counts_every_request_a_server_stall_delayed() -> None:
    """No coordinated omission: a 150 ms freeze delays every request due during it.

    At 200 requests/s about 30 fall due in the freeze; measured from their
    scheduled times, those due in its first 100 ms waited over 50 ms. A closed
    loop with one caller records a single slow request for the same freeze.
    """
    a = np.ones((1, 16), np.int32)
    request = build_request("stall", {"INPUT0": a, "INPUT1": a}).SerializeToString()
    with toy_server_in_thread() as (address, _):
        spec = LoadSpec(url=address, requests=[request], rate=200.0, duration_s=1.0, warmup_s=0)
        open_loop = run_load(spec).samples
    with toy_server_in_thread() as (address, _):
        spec = LoadSpec(url=address, requests=[request], concurrency=1, duration_s=1.0, warmup_s=0)
        closed_loop = run_load(spec).samples
    assert abs(len(open_loop) - 200) <= 1 and (open_loop.codes == 0).all()
    assert (open_loop.latencies_ns > 50e6).sum() >= 15
    assert 1 <= (closed_loop.latencies_ns > 50e6).sum() <= 3  # the stalled one (+ hiccups)


def test_streaming_counts_stream_errors(tmp_path: Path) -> None:
    for name, values in {"INPUT0": np.ones((1, 16), np.int32), "WRONG": np.ones(3)}.items():
        np.save(tmp_path / f"{name}.npy", values)
    with toy_server_in_thread() as (address, _):
        good, _ = short_run(address, "simple", random=True, streaming=True, concurrency=2)
        npy = {"INPUT0": tmp_path / "INPUT0.npy", "WRONG": tmp_path / "WRONG.npy"}
        bad, passed = short_run(address, "simple", npy_files=npy, streaming=True, concurrency=1)
    check_consistent(good)
    assert good["streaming"] and good["requests"]["ok"] > 20 and good["requests"]["errors"] == 0
    check_consistent(bad)
    assert not passed and bad["requests"]["ok"] == 0
    assert set(bad["errors_by_status"]) == {"STREAM_ERROR"}


def test_sweep_reports_each_level_and_plots_throughput_against_p99(tmp_path: Path) -> None:
    with toy_server_in_thread() as (address, _):
        document, passed = short_run(
            address,
            "simple",
            random=True,
            sweep=[1, 4],
            duration_s=0.4,
            report_path=tmp_path / "sweep.json",
            plot_path=tmp_path / "sweep.png",
        )
    assert passed and document["passed"]
    levels = document["sweep"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    for level in levels:
        check_consistent(level)
    assert json.loads((tmp_path / "sweep.json").read_text())["sweep"][1]["concurrency"] == 4
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_cli_prints_report_and_exits_by_error_rate(tmp_path: Path) -> None:
    from modelport.cli.loadtest import loadtest

    np.save(tmp_path / "x.npy", np.ones((1, 16), np.int32))
    runner = CliRunner()
    with toy_server_in_thread() as (address, _):
        ok = runner.invoke(
            loadtest,
            ["--url", address, "--model", "simple", "--random", "--shape", "INPUT0:2,16", "--shape", "INPUT1:2,16", "--concurrency", "2",
             "--duration", "500ms", "--warmup", "0.1s", "--processes", "1", "--report", "-"],
        )  # fmt: skip
        wrong = runner.invoke(
            loadtest,
            ["--url", address, "--model", "nope", "--input-npy", f"INPUT0={tmp_path / 'x.npy'}",
             "--concurrency", "1", "--duration", "0.3", "--warmup", "0", "--processes", "1",
             "--report", str(tmp_path / "r.json")],
        )  # fmt: skip
        usage = runner.invoke(loadtest, ["--url", address, "--model", "simple"])
        never_ready = runner.invoke(
            loadtest, ["--url", address, "--model", "nope", "--random", "--wait-ready", "0.6"]
        )
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout[ok.stdout.index("{") :])
    assert report["passed"] and report["requests"]["ok"] > 0
    assert wrong.exit_code == 1
    failed = json.loads((tmp_path / "r.json").read_text())
    assert set(failed["errors_by_status"]) == {"NOT_FOUND"} and failed["requests"]["ok"] == 0
    assert usage.exit_code == 2 and "input source" in usage.output
    assert never_ready.exit_code == 2 and "'nope' not ready after 0.6 s" in never_ready.output


def test_durations_take_units() -> None:
    from modelport.cli.loadtest import SECONDS

    assert [SECONDS.convert(v, None, None) for v in ("10", "10s", "1.5s", "250ms", "2m", ".5")] == [
        10.0, 10.0, 1.5, 0.25, 120.0, 0.5,
    ]  # fmt: skip
    with pytest.raises(click.BadParameter, match="not a duration"):
        SECONDS.convert("10 minutes", None, None)
