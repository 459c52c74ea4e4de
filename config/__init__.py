"""Configuration as data (JSON files per kind and model name); loaded by models.config and
models.credit.dataset.
"""
