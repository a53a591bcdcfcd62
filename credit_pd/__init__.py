"""Probability-of-default model for buy-now-pay-later customers: data, training, explanation, serving."""

__version__ = "0.1.0"
