"""Calibration: k-step error curves and the horizon they recommend (quantization and the device
budget sweep come with the calibration issue). Never imports torch."""
