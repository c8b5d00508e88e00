"""The router with registry policies in front of two replicas, for tritonclient tests.

Run with the project's Python (not the tritonclient venv):
    python router_stack.py COUNTS.json
Prints one JSON line {"router": ADDRESS} once serving. On SIGTERM it writes
what each replica answered, per model and version, to COUNTS.json and exits.
Replicas are the toy OIP servers of tests/support (no torch needed); policies come
from the registry stand-in over the real ModelRegistry contract:
  simple         split production(1)=90 / canary(2)=10
  simple_shadow  version 1 answers; a copy goes to the canary alias (2)
  simple_scatter the batch is split across both replicas
  mlp            ensemble of mlp:1 and mlp@canary (2): the mean is 1.5 x INPUT
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "router"))
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parents[1] / "services"))

from modelport.common.server import ServerOptions  # noqa: E402
from modelport.proto.modelport.registry.v1 import registry_pb2 as rpb  # noqa: E402
from modelport.router.app import RouterApp  # noqa: E402
from modelport.router.discovery import StaticDiscovery  # noqa: E402
from modelport.router.registry_policies import RegistryPolicySource  # noqa: E402
from modelport.router.replicas import Endpoint  # noqa: E402
from registry_stand_in import RegistryStandIn  # noqa: E402

from tests.support.toy_oip_server import ToyServer  # noqa: E402

MODELS = {name: ["1", "2"] for name in ("simple", "simple_shadow", "simple_scatter", "mlp")}


async def main(counts_path: Path) -> None:
    replicas = [ToyServer(MODELS), ToyServer(MODELS)]
    for replica in replicas:
        await replica.start()
    registry = RegistryStandIn()
    for model in MODELS:
        await registry.set_alias(model, "production", 1)
        await registry.set_alias(model, "canary", 2)
    split = [rpb.AliasWeight(alias="production", weight=90)]
    split.append(rpb.AliasWeight(alias="canary", weight=10))
    await registry.set_policy("simple", rpb.TrafficPolicy(split=split))
    await registry.set_policy("simple_shadow", rpb.TrafficPolicy(shadow_alias="canary"))
    await registry.set_policy("simple_scatter", rpb.TrafficPolicy(scatter=rpb.Scatter()))
    members = rpb.Ensemble(members=["mlp:1", "mlp@canary"])
    await registry.set_policy("mlp", rpb.TrafficPolicy(ensemble=members))
    source = RegistryPolicySource(await registry.start())
    endpoints = [Endpoint(m, r.address) for r in replicas for m in MODELS]
    app = RouterApp(StaticDiscovery(endpoints), source, ServerOptions(host="127.0.0.1", port=0))
    port = await app.start()
    while not (app.table.candidates("simple", "1") and app.router.planner.state.policies):
        await asyncio.sleep(0.02)
    while len(app.router.planner.state.policies) < len(MODELS):
        await asyncio.sleep(0.02)
    print(json.dumps({"router": f"127.0.0.1:{port}"}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await app.stop(1)
    counts = [
        {f"{model}:{version}": count for (model, version), count in r.served.items()}
        for r in replicas
    ]
    counts_path.write_text(json.dumps(counts))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
