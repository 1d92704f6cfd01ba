"""Onboard runtime: ONNX Runtime sessions, planners, the fixed-rate loop, the shield, the recorder.

Never imports torch (a test keeps it so). Import submodules directly, e.g.
`from dreamlink.runtime.loop import ControlLoop`.
"""
