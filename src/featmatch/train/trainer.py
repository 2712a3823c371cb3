"""A small, reproducible trainer shared by every recipe.

* AdamW, linear warm-up then cosine decay, gradient clipping, optional AMP (bfloat16 on
  CPU, float16 on CUDA; float32 weights and optimizer state). A recipe with
  ``amp_scope = "model"`` gets only the network's forward under autocast, with float32
  outputs, so its ground truth, teachers and losses stay float32 (see
  :class:`AutocastModel`); otherwise (``"loss"``, the default) the whole ``recipe.loss``
  runs under autocast. Optional channels-last.
* Data order is a pure function of the step: sample indices ``step * batch + k`` (times the
  world size under DDP) go to datasets whose items are functions of their index, so a
  resumed run sees exactly the data an uninterrupted one would.
* Checkpoints (model, optimizer, scheduler, step, RNG states) are written atomically to
  ``RUN/last.pt``; ``resume=True`` continues at the same step. A corrupt checkpoint stops
  the run with a one-line error and is left untouched.
* ``keep_best="metric"``: the weights of the best validation so far, the starting point
  included, are kept in ``RUN/best.pt``, and at the end of the run ``RUN/model.pt`` (the
  run's result) holds them too; the latest weights stay in ``RUN/last.pt``.
* Logs: one JSON object per line in ``RUN/log.jsonl``; a tqdm progress bar on a terminal.
* Multi-GPU: launch with ``torchrun``; the trainer joins the process group and wraps the
  model in ``DistributedDataParallel`` (rank 0 writes logs and checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import FeatmatchError, UsageError
from ..io import atomic_path

log = logging.getLogger(__name__)

#: run metadata (``extra_state``) that decides the training data (or crops): a resumed run must match
DATA_KEYS = ("size", "rotation", "jpeg", "scale", "perspective", "val_split", "split_seed", "pairs", "support_scale", "appearance")
#: what runs started before an option existed used (and so did not store): compared on --resume
#: like a stored value (the synthetic pairs' defaults before --rotation / --jpeg, --scale /
#: --perspective and --appearance were added)
LEGACY_DATA = {"rotation": 25.0, "jpeg": 0.0, "scale": [0.75, 1.3], "perspective": 0.12, "appearance": "standard"}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping options of :class:`Trainer`."""

    steps: int = 1000  # optimisation steps
    batch_size: int = 4  # pairs per step (per process)
    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 100  # linear warm-up length
    min_lr_ratio: float = 0.05  # cosine decays to lr * this
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    amp: bool = False  # mixed precision (float16 on CUDA, bfloat16 on CPU)
    val_every: int = 500  # validation period in steps (0 = only at the end)
    ckpt_every: int = 250  # checkpoint period in steps
    log_every: int = 10  # log period in steps
    num_workers: int = 0  # DataLoader workers
    seed: int = 0  # torch / numpy / python seed (data has its own seed)
    device: Optional[str] = None  # default: cuda if available (rank-local), else cpu
    freeze_bn: bool = False  # keep BatchNorm running statistics fixed (fine-tuning with small batches)
    # keep the weights of the best validation so far (step 0 included) in RUN/best.pt, by this
    # metric of recipe.validate() (higher is better); None: off. Guards fine-tuning against
    # making a good starting point worse.
    keep_best: Optional[str] = None
    channels_last: bool = False  # channels-last memory format for the network and its 4-D inputs


class Recipe(Protocol):
    name: str

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]: ...

    def validate(self, model: torch.nn.Module) -> dict: ...


def _to_float32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float64 else x
    if isinstance(x, dict):
        return {k: _to_float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(v) for v in x)
    return x


class AutocastModel:
    """The training network seen by a recipe: calls run under autocast (if ``enabled``) with
    4-D float inputs in channels-last (if ``channels_last``), and floating outputs are
    returned as float32, so everything the recipe computes from them (ground truth, losses)
    is float32. ``module`` is the underlying network (as for ``DistributedDataParallel``)."""

    def __init__(self, inner: torch.nn.Module, base: torch.nn.Module, device_type: str, enabled: bool,
                 channels_last: bool = False):
        self.inner, self.module, self.device_type = inner, base, device_type
        self.enabled, self.channels_last = enabled, channels_last
        self.dtype = torch.float16 if device_type == "cuda" else torch.bfloat16

    def _prep(self, x):
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(self, *args, **kwargs):
        args = tuple(self._prep(a) for a in args)
        kwargs = {k: self._prep(v) for k, v in kwargs.items()}
        if not self.enabled:  # no autocast context: an enclosing one (amp_scope "loss") stays in force
            return self.inner(*args, **kwargs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.inner(*args, **kwargs)
        return _to_float32(out)

    def train(self, mode: bool = True):
        self.inner.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __getattr__(self, name):  # parameters(), config, ... of the network
        if name in ("inner", "module"):
            raise AttributeError(name)
        return getattr(self.module, name)


class StepSampler(Sampler):
    """Indices ``start, start + 1, ...`` (the k-th sample of step s is ``s * B + k``)."""

    def __init__(self, start: int, count: int, stride: int = 1, offset: int = 0, batch_size: int = 1):
        self.start, self.count, self.stride, self.offset, self.batch_size = start, count, stride, offset, batch_size

    def __iter__(self):
        b = self.batch_size
        for i in range(self.count):
            step, k = divmod(self.start + i, b)
            yield (step * self.stride + self.offset) * b + k

    def __len__(self) -> int:
        return self.count


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Warm-up then cosine decay multiplier of the peak learning rate at ``step``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                     int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": list(random.getstate()[1]), "python_pos": int(random.getstate()[2] or 0)}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate((3, tuple(s["python"]), None))


def load_checkpoint(path: Path) -> dict:
    """Read a trainer checkpoint; a one-line :class:`FeatmatchError` if it is corrupt."""
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise FeatmatchError(f"checkpoint {path} is corrupt or unreadable ({first}); it was left as it is: "
                             "restore it, or start a new run in another folder") from None
    if not isinstance(ck, dict) or not {"model", "optimizer", "step"} <= set(ck):
        raise FeatmatchError(f"checkpoint {path} is not a featmatch training checkpoint; it was left as it is")
    return ck


class Trainer:
    """Train ``model`` with ``recipe.loss`` on ``dataset`` into the folder ``out_dir``."""

    def __init__(self, model: torch.nn.Module, recipe: Recipe, dataset: Dataset, out_dir: os.PathLike,
                 config: TrainConfig = TrainConfig(), extra_state: Optional[dict] = None):
        self.cfg = config
        self.recipe = recipe
        self.dataset = dataset
        self.out = Path(out_dir)
        self.extra_state = extra_state or {}
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        if config.device:
            self.device = torch.device(config.device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        else:
            self.device = torch.device("cpu")
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        inner: torch.nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            inner = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.amp_scope = getattr(recipe, "amp_scope", "loss")
        if self.amp_scope not in ("loss", "model"):
            raise FeatmatchError(f"recipe {recipe.name}: amp_scope must be 'loss' or 'model', got '{self.amp_scope}'")
        self.train_model = AutocastModel(inner, self.model, self.device.type, config.amp and self.amp_scope == "model",
                                         config.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, config))
        amp_cuda = config.amp and self.device.type == "cuda"
        if config.amp and self.device.type == "cpu":
            from ..device import cpu_native_bf16

            if not cpu_native_bf16():
                log.warning("--amp on a CPU without hardware bfloat16 (no AVX512-BF16 / AMX): bf16 is emulated "
                            "and slower than float32 here (about 2-4x measured); drop --amp on this machine")
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_cuda)
        self.step = 0
        self.best: Optional[dict] = None  # {"step", "metric", "value"} of RUN/best.pt

    # -- persistence -----------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.out / "last.pt"

    def save(self) -> None:
        if self.rank != 0:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                 "step": self.step, "rng": _rng_state(), "config": dataclasses.asdict(self.cfg),
                 "recipe": self.recipe.name, "extra": self.extra_state, "best": self.best}
        with atomic_path(self.ckpt_path) as tmp:
            torch.save(state, tmp)
        with atomic_path(self.out / "model.pt") as tmp:  # weights only, for featmatch.load(weights=...)
            torch.save(self.model.state_dict(), tmp)

    def restore(self) -> None:
        ck = load_checkpoint(self.ckpt_path)
        if ck.get("recipe") != self.recipe.name:
            raise FeatmatchError(f"checkpoint {self.ckpt_path} belongs to recipe '{ck.get('recipe')}', not '{self.recipe.name}'")
        stored = ck.get("extra") or {}
        for key in DATA_KEYS:
            if key in stored:
                was = stored[key]
            elif key in LEGACY_DATA:  # a run started before the option existed
                was = LEGACY_DATA[key]
            else:
                continue
            if key in self.extra_state and was != self.extra_state[key]:
                raise UsageError(f"--resume: {self.out} was started with {key}={was!r}, not "
                                 f"{self.extra_state[key]!r}; resume with the run's original options")
        self.model.load_state_dict(ck["model"], strict=True)
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if "scaler" in ck:
            self.scaler.load_state_dict(ck["scaler"])
        self.step = int(ck["step"])
        self.best = ck.get("best")
        _set_rng_state(ck["rng"])

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_log(self) -> None:
        """Drop log records of steps after the checkpoint (a killed run logged them, the
        resumed run logs them again)."""
        path = self.out / "log.jsonl"
        if self.rank != 0 or not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= self.step:
                    keep.append(line)
            except (ValueError, TypeError, AttributeError):
                continue  # a half-written last line of the killed run
        with atomic_path(path) as tmp:
            Path(tmp).write_text("".join(k + "\n" for k in keep))

    def _validated(self, val: dict) -> None:
        """Log a validation result; with ``keep_best``, save the weights if it is the best."""
        record = {"step": self.step, "val": val}
        metric = self.cfg.keep_best
        if metric:
            if metric not in val:
                raise FeatmatchError(f"keep_best: validation has no metric '{metric}' (it has: {', '.join(sorted(val))})")
            if self.best is None or float(val[metric]) > self.best["value"]:
                self.best = {"step": self.step, "metric": metric, "value": float(val[metric])}
                with atomic_path(self.out / "best.pt") as tmp:
                    torch.save(self.model.state_dict(), tmp)
            record["best"] = self.best
        self._log(record)

    def _train_mode(self) -> None:
        self.train_model.train()
        if self.cfg.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    # -- main loop ---------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Run until ``config.steps``; returns the last validation metrics."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            if not self.ckpt_path.exists():
                raise FeatmatchError(f"--resume: no checkpoint at {self.ckpt_path}")
            self.restore()
            self._truncate_log()
            log.info("resumed at step %d", self.step)
        else:
            if self.ckpt_path.exists():
                raise FeatmatchError(f"{self.out} already holds a run (last.pt); pass --resume or choose another folder")
            torch.manual_seed(cfg.seed)
            np.random.seed(cfg.seed)
            random.seed(cfg.seed)
            (self.out / "log.jsonl").unlink(missing_ok=True)
            if (cfg.val_every or cfg.keep_best) and self.rank == 0:  # the starting point, for the curves
                self.model.eval()
                with torch.no_grad():
                    self._validated(self.recipe.validate(self.model))
                torch.manual_seed(cfg.seed)  # validation must not shift the training RNG
        remaining = cfg.steps - self.step
        if remaining <= 0:
            return {}
        sampler = StepSampler(self.step * cfg.batch_size, remaining * cfg.batch_size, stride=self.world,
                              offset=self.rank, batch_size=cfg.batch_size)
        # own generator: creating the loader's iterator must not draw from the global RNG,
        # which recipes may use (a resumed run would otherwise be shifted by one draw)
        from ..data.synthetic import worker_init

        loader = DataLoader(self.dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                            persistent_workers=False, drop_last=True, worker_init_fn=worker_init,
                            generator=torch.Generator().manual_seed(cfg.seed * 7919 + self.step))
        bar = None
        if self.rank == 0:
            try:
                from tqdm import tqdm

                bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.recipe.name}", disable=None,
                           mininterval=2.0, dynamic_ncols=True)
            except ImportError:
                bar = None
        self._train_mode()
        val: dict = {}
        t_last = time.perf_counter()
        amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        amp_loss = cfg.amp and self.amp_scope == "loss"  # else autocast is inside self.train_model
        for batch in loader:
            batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_loss):
                loss, logs = self.recipe.loss(self.train_model, batch)
            self.opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                raise FeatmatchError(f"loss became {loss.item()} at step {self.step}; lower the learning rate (--lr) or enable --grad-clip")
            self.scaler.scale(loss).backward()
            gnorm = None
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.opt)
                gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            self.step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                now = time.perf_counter()
                rec = {"step": self.step, "loss": float(loss.detach()), "lr": self.sched.get_last_lr()[0],
                       "sec_per_step": (now - t_last) / cfg.log_every, **{k: float(v) for k, v in logs.items()}}
                if gnorm is not None:
                    rec["grad_norm"] = gnorm
                t_last = now
                self._log(rec)
            if (cfg.val_every and self.step % cfg.val_every == 0) or self.step == cfg.steps:
                if self.rank == 0:
                    self.model.eval()
                    with torch.no_grad():
                        val = self.recipe.validate(self.model)
                    self._train_mode()
                    self._validated(val)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save()
        if bar is not None:
            bar.close()
        if cfg.keep_best and self.best is not None and self.rank == 0 and (self.out / "best.pt").exists():
            # the run's result is the best validated weights (RUN/last.pt keeps the latest)
            with atomic_path(self.out / "model.pt") as tmp:
                shutil.copyfile(self.out / "best.pt", tmp)
            self._log({"step": self.step, "result": {"weights": "model.pt", **self.best}})
        return val
