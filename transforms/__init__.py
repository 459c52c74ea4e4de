"""Beam transforms and the pure functions they wrap, one package per capability (credit, radar,
evaluation) plus the plumbing they share (common).
"""
