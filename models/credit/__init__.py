"""The credit model: data set configuration, model with preprocessing inside, training, handler,
request replay and demo scenarios.
"""
