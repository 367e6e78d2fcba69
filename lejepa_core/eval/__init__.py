"""Evaluation of trained runs: probes, baselines and figures driven by the env's metadata."""
