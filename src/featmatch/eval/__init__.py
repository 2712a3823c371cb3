"""Evaluation: pure metric functions (:mod:`featmatch.eval.metrics`) and benchmarks."""
