"""Processes that are not pipelines: the banks offer API stand-in and the real-time chunk feed."""
