"""Runners beyond Beam's own: a DaskRunner with its data losses fixed."""
