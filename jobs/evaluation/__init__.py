"""Evaluation of trained models and the promotion rules that use it."""
