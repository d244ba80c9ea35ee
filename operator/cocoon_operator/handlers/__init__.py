"""Thin kopf handlers: gather from indexes and the event, call reconcile, execute."""
