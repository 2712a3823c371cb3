"""Torch device names: checked once, with ``"auto"`` for the best available device."""

from __future__ import annotations

from typing import Any

from .errors import UsageError

_HELP = "use cpu, cuda, cuda:N, mps or auto"


def resolve_device(device: Any = None) -> Any:
    """The ``torch.device`` for ``device``, checked to exist on this machine.

    Args:
        device: None or ``"cpu"`` (CPU), ``"auto"`` (CUDA, then MPS, then CPU), ``"cuda"``,
            ``"cuda:N"``, ``"mps"`` or a ``torch.device``.

    Raises:
        UsageError: an unknown device name, or a device this machine does not have
            (``cuda`` without a GPU, ``cuda:3`` with two GPUs, ``mps`` off Apple silicon).
    """
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"unknown device '{device}'; {_HELP}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device '{device}' is not available: this torch build sees no CUDA GPU "
                             f"(torch {torch.__version__}); use cpu or auto")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UsageError(f"device '{device}' does not exist: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"device '{device}' is not available (MPS needs Apple silicon and a torch build with MPS); use cpu or auto")
    elif dev.type != "cpu":
        raise UsageError(f"device '{device}' is not supported by featmatch; {_HELP}")
    return dev


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX).

    oneDNN also *accepts* bfloat16 on plain AVX-512 CPUs (``torch.ops.mkldnn.
    _is_mkldnn_bf16_supported()`` is True there) but emulates it: measured on an Intel Xeon
    with AVX-512 and no AVX512-BF16, a 2048x2048 bf16 matmul ran at 56 GFLOP/s against 210
    in float32, and LIFT's extract was 2.2x slower under bf16 autocast. So bf16 is a speed
    default only where this returns True. Other architectures (ARM, ...) answer False:
    float32 is the safe default there.
    """
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            continue
    return False
