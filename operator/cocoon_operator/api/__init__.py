"""Typed API of the operator: label/annotation keys, spec/status models, conditions."""
