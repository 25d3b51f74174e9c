"""Evaluation: load the checks, evaluate their expressions against the facts, apply exemptions (pure, no I/O)."""
