"""Inference and evaluation: the predictor, ``predict``, ``evaluate``, metrics, figures."""
