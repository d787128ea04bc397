"""Runners, one per backend, behind ``runtime.backends.base.Runner``."""
