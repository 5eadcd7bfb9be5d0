"""Where a run computes and how: the device, the training precision, the memory layout and the
compile mode that the `auto` settings resolve to, each with the reason it was chosen.

CUDA: bf16 autocast, channels_last and torch.compile by default. CPU: bf16 autocast and
channels_last only where the processor has native bf16 dot products (AVX512-BF16 or AMX-BF16),
where they pay (ResNet-20 in bf16 + channels_last: 997.7 images/s on a 2-core Xeon with AMX-BF16,
experiments/results/cifar10-jpeg/cifar_resnet20-bf16native-seed0/); elsewhere bf16 is emulated and
much slower than fp32 (0.07x on an AVX2 EPYC, 0.10x with channels_last: experiments/results/cpu/),
so fp32 + contiguous. Weights, SGD and every evaluation stay fp32 on all devices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from resnet_repro.errors import ConfigError

# /proc/cpuinfo flags that mean native bf16 dot products (Linux names).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")

# The test suite's switch (tests/conftest.py --cpu-bf16): `native` or `none` makes this module
# see a CPU with or without native bf16 whatever the host has, so a suite run on one kind of CPU
# checks what the other kind would do. Every precision reason names it while it is set.
FAKE_BF16_ENV = "RESNET_REPRO_FAKE_CPU_BF16"


def _fake_bf16() -> str | None:
    fake = os.environ.get(FAKE_BF16_ENV, "")
    if fake not in ("", "native", "none"):
        raise ConfigError(f"{FAKE_BF16_ENV} must be native or none (a test switch), got {fake!r}")
    return fake or None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is absent: macOS, Windows), with the
    native-bf16 flags added or removed while the test switch FAKE_BF16_ENV is set."""
    flags: frozenset[str] = frozenset()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = frozenset(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    fake = _fake_bf16()
    if fake == "native":
        return flags | set(BF16_FLAGS)
    if fake == "none":
        return flags - set(BF16_FLAGS)
    return flags


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU has (none: bf16 would be emulated)."""
    flags = cpu_flags()
    return tuple(f for f in BF16_FLAGS if f in flags)


def cpu_record() -> dict[str, object]:
    """The CPU as a bench record or summary names it: model, torch's kernel level, the flags
    that decide the precision."""
    flags = cpu_flags()
    return {
        "model": cpu_model(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
        "native_bf16": list(cpu_bf16_flags()),
        **({"faked_bf16": _fake_bf16()} if _fake_bf16() else {}),
    }


@dataclass(frozen=True)
class Precision:
    """What the `trainer.amp` / `trainer.channels_last` settings resolve to, and why."""

    amp: bool  # bf16 autocast (weights and SGD stay fp32)
    channels_last: bool
    reason: str


def resolve_precision(amp: str, channels_last: str, device: torch.device) -> Precision:
    """`auto` follows the hardware: CUDA -> bf16 + channels_last; a CPU with native bf16 ->
    bf16 + channels_last; any other CPU -> fp32 + contiguous. `bf16`/`off` and `on`/`off` force."""
    if device.type == "cuda":
        auto, why = True, "auto on CUDA: bf16 autocast + channels_last"
    else:
        native = cpu_bf16_flags()
        if native:
            auto, why = True, f"auto on a CPU with native bf16 ({', '.join(native)}): bf16 autocast + channels_last"
        else:
            auto, why = False, "auto on a CPU without native bf16 (no avx512_bf16/amx_bf16: bf16 would be emulated): fp32"
    use_amp = amp == "bf16" or (amp == "auto" and auto)
    use_cl = channels_last in ("on", "true") or (channels_last == "auto" and auto)
    forced = [f"trainer.amp={amp}"] if amp != "auto" else []
    forced += [f"trainer.channels_last={channels_last}"] if channels_last != "auto" else []
    reason = why if not forced else f"{' '.join(forced)} set ({why} otherwise)"
    if device.type == "cpu" and _fake_bf16():
        reason += f" [faked: {FAKE_BF16_ENV}={_fake_bf16()}]"
    return Precision(amp=use_amp, channels_last=use_cl, reason=reason)


def emulated_bf16_note(choice: Precision, device: torch.device) -> str | None:
    """A note for bf16 autocast on a CPU without native bf16 (forced, or kept from the run's
    start): it is emulated, 15.3x slower than fp32 (10.0x with channels_last: ResNet-20 on an
    AVX2 EPYC, experiments/results/cpu/bench_precisions_cifar_resnet20_avx2.txt), and torch's
    fallback convolution sums weight gradients over the batch in bf16
    (experiments/results/cpu/bf16_conv_check_avx2.md)."""
    if not choice.amp or device.type != "cpu" or cpu_bf16_flags():
        return None
    return ("bf16 autocast on a CPU without native bf16 (no avx512_bf16/amx_bf16) is emulated: 15.3x slower "
            "than fp32 (10.0x with channels_last; ResNet-20 on an AVX2 CPU), and its weight gradients are "
            "summed over the batch in bf16 (8x one rounding's error at batch 128 with torch 2.14; "
            "experiments/bf16_conv_check.py measures it). trainer.amp=off trains in fp32")


def use_amp(setting: str, device: torch.device) -> bool:
    return resolve_precision(setting, "auto", device).amp


def use_channels_last(setting: str, device: torch.device) -> bool:
    return resolve_precision("auto", setting, device).channels_last


def resolve_device(device: str, key: str = "trainer.device") -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without one is an error (naming `key`:
    the setting the user gave, `device` for eval)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key} must be auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}=cuda but no CUDA device is available (use {key}=cpu or auto)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key} must be auto, cpu or cuda[:N], got {device!r}")
    return dev




def compile_mode(setting: str, device: torch.device) -> str | None:
    """torch.compile mode, or None for eager. `auto` compiles on CUDA only: on the CPU the
    compile time (tens of seconds) outweighs the gain (measured: bf16 + channels_last 1,508
    images/s eager vs 1,403 compiled on ResNet-20, issue 19)."""
    if setting == "auto":
        return "default" if device.type == "cuda" else None
    return None if setting in ("off", "false") else setting
