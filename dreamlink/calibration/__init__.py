"""Calibration: how far the imagined future can be trusted, at which precision, on this board. Never
imports torch.

kstep.py        the compounding-error curve (k-step open-loop error) and the horizon it recommends
tlog_data.py    .tlog flight logs -> transitions, through the runtime's own vehicle profile code
reference_logs.py  where the real ArduPilot / PX4 SITL logs are (../shared beside the repository)
reader.py       transitions from .tlog and .npz; the CalibrationDataReader for static quantization
quantize.py     fp16, int8 dynamic, int8 static QDQ (MinMax / Entropy / Percentile), float islands
accuracy.py     one-step, k-step and planner-action error per precision
horizon.py      tolerance -> horizon, ensemble disagreement threshold, accept/refuse per precision
budget.py       the K x H latency sweep per precision and the budget that fits the control period
closed_loop.py  figure-eight tracking per precision in lockstep SITL
calibrate.py    the stages together; writes the calibrated bundle
report.py       calibration.md + PNG plots
cli_commands.py `dreamlink quantize`, `dreamlink calibrate`
bundles.py      quantized world models and planner graphs packed into bundles
"""
