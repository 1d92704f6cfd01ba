"""torch -> ONNX export, parity against torch, and packing bundles (through `dreamlink.bundle`).

onnx_export.py         any nn.Module with the contract -> ONNX (TorchScript exporter), parity against torch
pack.py                export + parity gate + write a bundle; add a distilled policy to one
planner_graph.py       the fused planner graph composed around a world model (no torch: calibration uses it on devices)
graph_builder.py       the node builder and node copier that planner_graph composes with
planner_graph_pack.py  the planner graph optimised offline, the world model quantized int8, a planner bundle

Import the modules themselves: this package's `__init__` stays empty so that `planner_graph` (and
`planner_graph_pack`) do not pull torch in.
"""
