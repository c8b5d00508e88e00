"""The ensemble planner and scheduler, with Python functions as members."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from modelport.artifacts.ensembles import plan_ensemble
from modelport.errors import InvalidInput, NotFound
from modelport.inference.ensemble import EnsembleScheduler

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

Arrays = dict[str, np.ndarray]


def diamond() -> list[tuple[str, int, dict[str, str], dict[str, str]]]:
    """IN -> double -> D; IN -> negate -> N; (D, N) -> add -> OUT."""
    return [
        ("double", -1, {"x": "IN"}, {"y": "D"}),
        ("negate", 2, {"x": "IN"}, {"y": "N"}),
        ("add", -1, {"a": "D", "b": "N"}, {"sum": "OUT", "unused": "DROPPED"}),
    ]


class Members:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.concurrent = 0
        self.peak = 0
        self.delay = delay

    async def __call__(self, model: str, version: int, x: Arrays, deadline: float | None) -> Arrays:
        self.calls.append((model, version))
        self.concurrent += 1
        self.peak = max(self.peak, self.concurrent)
        await asyncio.sleep(self.delay)
        self.concurrent -= 1
        if model == "double":
            return {"y": x["x"] * 2}
        if model == "negate":
            return {"y": -x["x"]}
        if model == "add":
            return {"sum": x["a"] + x["b"], "unused": x["a"]}
        raise NotFound(f"model '{model}' is not loaded on this server")


async def test_a_diamond_runs_its_branches_concurrently() -> None:
    plan = plan_ensemble("e", ["IN"], ["OUT"], diamond())
    members = Members(delay=0.01)
    scheduler = EnsembleScheduler(plan, members)
    out = await scheduler.run({"IN": np.array([[1.0, 2.0]])}, None)
    np.testing.assert_array_equal(out["OUT"], [[1.0, 2.0]])  # 2x + (-x)
    assert list(out) == ["OUT"]
    assert members.peak == 2  # double and negate overlapped
    assert ("negate", 2) in members.calls
    assert [(s.success, s.fail) for s in scheduler.stats] == [(1, 0), (1, 0), (1, 0)]
    assert plan.members == [("add", -1), ("double", -1), ("negate", 2)]


async def test_a_failing_step_fails_the_request_with_its_code_and_step() -> None:
    steps = diamond()
    steps[1] = ("missing", -1, {"x": "IN"}, {"y": "N"})
    scheduler = EnsembleScheduler(plan_ensemble("e", ["IN"], ["OUT"], steps), Members())
    with pytest.raises(
        NotFound, match="ensemble 'e' step 1 \\(model 'missing'\\): model 'missing'"
    ):
        await scheduler.run({"IN": np.ones((1, 2))}, None)
    assert scheduler.stats[1].fail == 1
    assert scheduler.stats[2].success == 0


async def test_max_inflight_bounds_each_step() -> None:
    plan = plan_ensemble("e", ["IN"], ["D"], diamond()[:1], max_inflight=1)
    members = Members(delay=0.01)
    scheduler = EnsembleScheduler(plan, members)
    await asyncio.gather(*(scheduler.run({"IN": np.ones(1)}, None) for _ in range(4)))
    assert members.peak == 1


@pytest.mark.parametrize(
    ("steps", "outputs", "message"),
    [
        ([], ["OUT"], "has no step"),
        (
            [("a", -1, {"x": "IN"}, {"y": "T"}), ("b", -1, {"x": "IN"}, {"y": "T"})],
            ["T"],
            "'T' is produced by step 1 \\(model 'b'\\) and by step 0",
        ),
        ([("a", -1, {"x": "NOPE"}, {"y": "OUT"})], ["OUT"], "reads ensemble tensor 'NOPE'"),
        (
            [("a", -1, {"x": "IN"}, {"y": "T"})],
            ["OUT"],
            "ensemble output 'OUT' is produced by no step",
        ),
        (
            [("a", -1, {"x": "IN"}, {"y": "IN"})],
            ["IN"],
            "produced by step 0 .* and by an ensemble input",
        ),
        ([("a", -1, {"x": "B"}, {"y": "A"}), ("b", -1, {"x": "A"}, {"y": "B"})], ["A"], "cycle"),
        ([("e", -1, {"x": "IN"}, {"y": "OUT"})], ["OUT"], "is the ensemble itself"),
        ([("a", -1, {}, {"y": "OUT"})], ["OUT"], "needs an input_map and an output_map"),
    ],
)
def test_bad_plans_are_refused(steps: list, outputs: list[str], message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput, match=message):
        plan_ensemble("e", ["IN"], outputs, steps)
