"""Writing ONNX graphs node by node: a small builder (unique names, constants, opset-dependent forms) and a
copier of another model's nodes under new value names.

The fused planner graph (`planner_graph`) is made of both: its own nodes come from the builder, and the world
model's nodes are copied in once per rollout step. Kept apart so that the planner module reads as the planner.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper

# ---------------------------------------------------------------------------------------------
# Copying the world model's nodes under new value names
# ---------------------------------------------------------------------------------------------


def copy_graph_nodes(nodes: Iterable[NodeProto], mapping: dict[str, str], prefix: str) -> list[NodeProto]:
    """Copies of `nodes` with every produced name prefixed and references looked up in `mapping`.

    `mapping` is updated with the new names (so later nodes see them). Subgraphs (If/Loop/Scan
    bodies) get the same treatment with a scoped copy of the mapping, so outer-scope references
    are renamed and names stay unique across the H copies.
    """
    out = []
    for node in nodes:
        n = NodeProto()
        n.CopyFrom(node)
        if n.name:
            n.name = prefix + n.name
        for i, name in enumerate(n.input):
            if name:
                n.input[i] = mapping.get(name, name)
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_subgraph(attr.g, dict(mapping), prefix)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _rename_subgraph(sub, dict(mapping), prefix)
        for i, name in enumerate(n.output):
            if name:
                new = mapping[name] if name in mapping and _is_preassigned(mapping, name) else prefix + name
                mapping[name] = new
                n.output[i] = new
        out.append(n)
    return out


_PREASSIGNED_MARK = "\x00preassigned"


def _is_preassigned(mapping: dict[str, str], name: str) -> bool:
    return (_PREASSIGNED_MARK + name) in mapping


def preassign(mapping: dict[str, str], name: str, new: str) -> None:
    """Fix the new name of a value the copied nodes produce (the world model's output)."""
    mapping[name] = new
    mapping[_PREASSIGNED_MARK + name] = new


def _rename_subgraph(g: GraphProto, mapping: dict[str, str], prefix: str) -> None:
    for v in g.input:
        mapping[v.name] = prefix + v.name
        v.name = prefix + v.name
    for init in g.initializer:
        mapping[init.name] = prefix + init.name
        init.name = prefix + init.name
    new_nodes = copy_graph_nodes(g.node, mapping, prefix)
    del g.node[:]
    g.node.extend(new_nodes)
    for v in g.output:
        v.name = mapping.get(v.name, v.name)
    del g.value_info[:]


# ---------------------------------------------------------------------------------------------
# A small builder: names, constants and opset-dependent forms
# ---------------------------------------------------------------------------------------------


class Builder:
    def __init__(self, opset: int, prefix: str = "p/") -> None:
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[NodeProto] = []
        self.inits: list[TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def const(self, value: np.ndarray | float | list[int], hint: str, dtype: type = np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs: object) -> str:
        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=outs[0] + "/node", **attrs))
        return outs[0]

    def op_multi(self, op_type: str, inputs: list[str], n_out: int, hint: str, **attrs: object) -> list[str]:
        outs = [self.name(hint) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=outs[0] + "/node", **attrs))
        return outs

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int, hint: str | None = None) -> str:
        """ReduceSum takes axes as an input from opset 13, the others from 18."""
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if as_input:
            return self.op(op_type, [x, self.const(axes, "axes", np.int64)], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=axes, keepdims=keepdims)
