"""Engines: run a job's shards in this process (default) or as Ray tasks.

A *job* is a picklable object with ``run(shard, progress=None) -> int`` that computes
one shard (a list of image names or pairs), writes it as one atomic shard file (see
:class:`~featmatch.pipeline.store.ShardedH5`) and returns the number of items done. The
engine only schedules: the results travel through the shard files, so a Ray cluster
needs a file system shared by its nodes (the output folder), and the driver merges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..errors import FeatmatchError, UsageError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass
class ModelJob:
    """A shard job that builds its featmatch model on first use. Picklable for Ray: the built
    model is never sent (``__getstate__`` drops it); each worker loads its own."""

    model: str
    overrides: dict
    weights: Optional[str]
    device: Optional[str]
    images: str
    out: str
    attrs: dict

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_net", None)
        return state

    def check_model(self) -> None:
        """Refuse a model this job cannot use (before building it); nothing by default."""

    def load(self) -> Any:
        net = self.__dict__.get("_net")
        if net is None:
            self.check_model()
            from ..registry import load

            net = self._net = load(self.model, weights=self.weights, device=self.device, **self.overrides)
        return net


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar (rate and ETA) when tqdm is installed and ``enabled``; else a no-op."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.1)
        except ImportError:
            pass

    class _Null:
        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    return _Null()


def split(items: Sequence, size: int) -> list[list]:
    """Consecutive chunks of ``size`` items."""
    if size < 1:
        raise UsageError(f"shard size must be at least 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def run_shards(job: Any, shards: list[list], *, engine: str = "local", desc: str = "", unit: str = "it",
               progress: bool = True, ray_address: Optional[str] = None) -> int:
    """Run ``job`` on every shard with the chosen engine; returns the items done."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    total = sum(len(s) for s in shards)
    if not shards:
        return 0
    bar = progress_bar(total, desc, unit, progress)
    try:
        if engine == "local":
            done = 0
            for shard in shards:
                done += job.run(shard, progress=bar.update)
            return done
        return _run_ray(job, shards, bar, ray_address)
    finally:
        bar.close()


def _ray():
    try:
        import ray
    except ImportError as e:
        raise FeatmatchError("--engine ray needs Ray: pip install 'featmatch[ray]'") from e
    return ray


def _run_ray(job: Any, shards: list[list], bar: Any, address: Optional[str]) -> int:
    ray = _ray()
    if not ray.is_initialized():
        # address None: join RAY_ADDRESS / a running local cluster, else start one
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=1)(_ray_run)
    job_ref = ray.put(job)
    pending = {task.remote(job_ref, s): len(s) for s in shards}
    done = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                try:
                    n = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # re-raise our one-line errors as they are
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, FeatmatchError):
                        raise cause from None
                    raise FeatmatchError(f"a Ray task failed: {str(e).strip().splitlines()[-1]}") from e
                done += n
                bar.update(n)
    finally:
        for ref in pending:
            ray.cancel(ref)
    return done


def _ray_run(job: Any, shard: list) -> int:
    """Body of one Ray task (module-level so Ray can pickle it by reference)."""
    import torch

    torch.set_num_threads(1)
    return job.run(shard)
