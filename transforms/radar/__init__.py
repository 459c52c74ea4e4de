"""Radar QC: reading volumes and chunk sets with xradar, chunk assembly, applying and writing QC,
rows, quicklooks, synthetic volumes with truth, the pipeline DoFns and replay.
"""
