"""Shared plumbing of every pipeline: file sources, windows, the Parquet sink, deterministic
sampling, sampled predictions, dead letters and run outputs.
"""
