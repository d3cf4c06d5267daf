"""Correctness checks: a result that must agree with another path, or with a known value."""
