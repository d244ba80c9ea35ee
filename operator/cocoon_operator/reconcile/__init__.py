"""Gather observed state into typed values, call policies and builders, return actions."""
