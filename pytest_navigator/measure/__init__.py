"""Measurement: the profiler's windows and sweep, and what surrounds a window (interference, telemetry,
calibration, peak memory, traces, instruction counts under valgrind).
"""
