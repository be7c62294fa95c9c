"""Bias correction after quantization: fast (`fast.py`, the exact weight-error shift from the one statistics pass)
and full (`full.py`, a few block passes of the int8-weight model); the math is in `correct.py`."""
