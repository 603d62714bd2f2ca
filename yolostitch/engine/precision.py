"""Mixed precision (``--amp``): which autocast dtype, loss scaling and memory format a device gets.

``auto`` (the default): fp16 autocast with a GradScaler on CUDA, as stock YOLOv5 trains; bf16 autocast with
channels-last activations on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX; about twice the fp32
throughput of yolov5s, see ``benchmarks/precision.py``); fp32 everywhere else, since a CPU without those
instructions would emulate bf16 and run slower than fp32. ``off``: fp32 throughout, the same numbers as a
model run without any of this (what stock-parity checks use).

Only the network's layers run in reduced precision. The per-anchor heads cast their maps to fp32 before
decoding (a bf16 box centre near 600 px would be off by up to 2 px), :func:`to_float` casts every output before
the loss, NMS and metrics, and parameters, gradients, optimizer state, EMA and checkpoints stay fp32 (autocast
casts a copy of a weight for each op; it never stores one).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterable

import torch

from ..errors import FlagError

LOGGER = logging.getLogger(__name__)

AMP_MODES = ("auto", "off")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 /proc/cpuinfo flags of bf16 dot products


@dataclass(frozen=True)
class Precision:
    """A resolved policy: ``dtype`` None means fp32 (no autocast); ``channels_last`` applies to 4-D inputs."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    channels_last: bool = False
    reason: str = ""
    base: str = "fp32"  # what runs without autocast: fp32, or "fp16 graph" for an fp16 file from export --half

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def scales_loss(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return self.dtype == torch.float16

    def autocast(self) -> ContextManager:
        """The context the model's forward runs in (a no-op for fp32)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 (as stock: ``GradScaler(enabled=amp)``)."""
        return torch.amp.GradScaler("cuda", enabled=self.scales_loss)

    def prepare(self, x: Any) -> Any:
        """The model input in the policy's memory format: 4-D float tensors (images, feature maps) channels-last.

        Only the activations are converted; convolutions then run channels-last (oneDNN follows its input)
        while the parameters keep their layout, so the optimizer, EMA and checkpoints see ordinary tensors."""
        if not self.channels_last:
            return x
        if torch.is_tensor(x):
            return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and x.is_floating_point() else x
        if isinstance(x, dict):
            return {k: self.prepare(v) for k, v in x.items()}
        return x

    def describe(self) -> str:
        if not self.enabled:
            return self.base + (f" ({self.reason})" if self.reason else "")
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, str(self.dtype))
        extras = (" + GradScaler" if self.scales_loss else "") + (", channels-last" if self.channels_last else "")
        return f"{name} autocast{extras}" + (f" ({self.reason})" if self.reason else "")


def choose_precision(amp: str, device_type: str, cpu_bf16: bool) -> Precision:
    """The policy for ``--amp amp`` on a ``device_type`` device; ``cpu_bf16``: the CPU has native bf16.

    A pure function of its arguments (the detection is in :func:`precision_for`), so each case is testable on
    any machine."""
    if amp not in AMP_MODES:
        raise FlagError(f"--amp {amp!r}: expected one of {', '.join(AMP_MODES)}")
    if amp == "off":
        return Precision(device_type, reason="--amp off")
    if device_type == "cuda":
        return Precision("cuda", torch.float16, reason="CUDA, as stock")
    if device_type == "cpu" and cpu_bf16:
        return Precision("cpu", torch.bfloat16, channels_last=True, reason="CPU with native bf16")
    why = "no native bf16 on this CPU" if device_type == "cpu" else f"no mixed precision on {device_type}"
    return Precision(device_type, reason=why)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo`` ``flags``/``Features`` lines); empty if unreadable."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def native_cpu_bf16(flags: Iterable[str]) -> bool:
    """Whether CPU feature ``flags`` include native bf16 dot products (AVX512-BF16 or AMX-BF16)."""
    return bool(NATIVE_BF16_FLAGS & set(flags))


def detected_cpu_flags() -> frozenset[str]:
    """This CPU's flags: /proc/cpuinfo, else (no such file: macOS, Windows) what torch's own probe reports."""
    found = set(cpu_flags())
    if not found:
        if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
            found.add("avx512_bf16")
        if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
            found.add("amx_bf16")  # every AMX CPU so far has AMX-BF16
    return frozenset(found)


def onednn_bf16() -> bool:
    """Whether this torch build runs CPU convolutions in bf16 through oneDNN."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return torch.backends.mkldnn.is_available() and (probe is None or bool(probe()))


def precision_for(amp: str, device: torch.device | str) -> Precision:
    """The policy for ``--amp amp`` on ``device``, detecting the CPU's bf16 support; logged."""
    device_type = torch.device(device).type
    cpu_bf16 = (device_type == "cpu" and amp == "auto" and native_cpu_bf16(detected_cpu_flags())
                and onednn_bf16())
    policy = choose_precision(amp, device_type, cpu_bf16)
    LOGGER.debug("precision: %s", policy.describe())  # the commands print the policy themselves
    return policy


def to_float(outputs: Any) -> Any:
    """``outputs`` with every floating tensor (in dicts, lists and tuples) as fp32: what the loss, NMS and
    metrics take. fp32 tensors come back as they are (the same objects)."""
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):  # a head's NamedTuple (heads.outputs)
        return type(outputs)(*(to_float(v) for v in outputs))
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(to_float(v) for v in outputs)
    return outputs
