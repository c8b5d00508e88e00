"""Give a torch.export program's linear layers back their `nn.Linear` modules.

An exported program run as a module (`program.module()`) calls
`aten.linear(x, weight, bias)` on constant weights; the module that owned them
is gone. torchao's `quantize_` and torch's pruning utilities work on
`nn.Linear` modules, so each such call becomes a call of a fresh `nn.Linear`
holding the same tensors. The graph computes exactly what it did before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _attribute(module: nn.Module, dotted: str) -> Any:
    value: Any = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def lift_linears(graph_module: torch.fx.GraphModule) -> list[nn.Linear]:
    """Rewrite `graph_module` in place; returns the new Linear modules in graph order."""
    lifted: list[nn.Linear] = []
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
            continue
        x, weight_node = node.args[0], node.args[1]
        bias_node = node.args[2] if len(node.args) > 2 else None
        if weight_node.op != "get_attr" or (bias_node is not None and bias_node.op != "get_attr"):
            continue  # a weight computed at run time is not a layer's parameter
        weight = _attribute(graph_module, weight_node.target).detach()
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias_node is not None)
        layer.weight = nn.Parameter(weight, requires_grad=False)
        if bias_node is not None:
            bias = _attribute(graph_module, bias_node.target).detach()
            layer.bias = nn.Parameter(bias, requires_grad=False)
        name = f"linear_{len(lifted)}"
        graph_module.add_module(name, layer)
        with graph.inserting_before(node):
            call = graph.call_module(name, (x,))
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        lifted.append(layer)
    graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return lifted
