"""torch -> ONNX export, parity against torch, and packing bundles (through `dreamlink.bundle`).

onnx_export.py    any nn.Module with the contract -> ONNX (TorchScript exporter), parity against torch
pack.py           export + parity gate + write a bundle; add a distilled policy to one
planner_graph.py  the fused planner graph around a world model (no torch: calibration uses it on devices)

Import the modules themselves: this package's `__init__` stays empty so that `planner_graph` does not
pull torch in.
"""
