"""Correctness: input samples (generated and users'), the truth and the error budget, verify functions,
the check of one runtime, and the failing samples it saves.
"""
