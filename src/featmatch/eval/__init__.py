"""Evaluation: pure metric functions and benchmarks.

* :mod:`~featmatch.eval.metrics`: pure metric functions (MMA, MHA, AUC, pose, epipolar, ...).
* :mod:`~featmatch.eval.data`: HPatches-layout and pose pair-list readers with layout checks.
* :mod:`~featmatch.eval.cache`: HDF5 prediction cache keyed by model + config hash.
* :mod:`~featmatch.eval.predict`: the prediction loop shared by the benchmarks.
* :mod:`~featmatch.eval.homography`, :mod:`~featmatch.eval.pose`: scoring and ``run()``.
* :mod:`~featmatch.eval.report`: JSON, markdown tables and PNG plots.
* :mod:`~featmatch.eval.cli`: ``featmatch eval homography|pose``.
"""
