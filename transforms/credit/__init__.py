"""Credit offers: request parsing and validation, offer rules, the offer API caller, row building
and replay of credit decisions.
"""
