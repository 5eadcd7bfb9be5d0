"""`python -m resnet_repro bench +exp=... [bench.iters=N]`: training throughput and peak memory.

In one invocation it times
- the configured run: the training step exactly as `train` runs it (tensor pipeline on the
  device, bf16 autocast, channels_last, torch.compile, fused SGD as configured), and
- a naive baseline (CIFAR data): the identical model trained from a torchvision `DataLoader`
  over PIL-transformed images, fp32, eager, contiguous, plain SGD,
and prints images/s, ms per iteration, peak memory and their ratio. `bench.concurrent=N` also
runs N configured benches at once on the same device (several small runs sharing one GPU) and
compares the aggregate images/s with one run. `bench.synthetic=true` feeds random batches that
already sit on the device (the model's ceiling, e.g. ResNet-50 at 224). `bench.json=<file>`
writes everything, with the command, device, versions and date, for experiments/results/.

ImageNet (data=imagenet, issue 16): for each decode path (`bench.decode_paths`, default both:
data.decode=device and workers) the input pipeline alone (batches drawn, no model) and end to
end, and the synthetic ceiling of the same model and crop (`bench.ceiling`), so one run says
whether the input keeps up with the model.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from omegaconf import DictConfig, OmegaConf
from torch import nn

from resnet_repro.data.build import load_cifar_splits
from resnet_repro.data.settings import CIFAR_SOURCES
from resnet_repro.training.inputs import build_training_data
from resnet_repro.training.distributed import World
from resnet_repro.training.step import make_sgd, maybe_compile, train_step
from resnet_repro.errors import ReproError
from resnet_repro.runs.sinks import write_json_atomic
from resnet_repro.config.archs import input_size
from resnet_repro.models.resnet import build_from_arch
from resnet_repro.runs.provenance import environment, peak_memory, reset_peak_memory
from resnet_repro.training.policy import compile_mode, cpu_record, resolve_device, resolve_precision
from resnet_repro.config.settings import PRECISION_PATHS, BenchSettings, RunSettings
from resnet_repro.schema import run_settings


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        c = OmegaConf.to_container(cfg, resolve=True)
        bench = bench_settings(c.pop("bench", None) or {})  # type: ignore[union-attr]
        overrides = list(HydraConfig.get().overrides.task)
        result = run_bench(run_settings(c), bench, overrides)  # type: ignore[arg-type]
        print(format_result(result))
        if bench.json:
            write_json_atomic(bench.json, result)
            print(f"wrote {bench.json}")
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def bench_settings(b: dict[str, Any]) -> BenchSettings:
    """The `bench.*` settings, typed and range-checked (one clear line each)."""
    from resnet_repro.schema import typed

    return typed(BenchSettings, b, "bench.")  # types and keys, then BenchSettings' own ranges


# -- timing -----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, batches, iters: int, warmup: int, batch: int, device: torch.device) -> dict[str, Any]:
    for _ in range(warmup):
        step(*next(batches))
    _sync(device)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step(*next(batches))
    _sync(device)
    seconds = time.perf_counter() - t0
    peak, kind = peak_memory(device)
    if kind == "process_peak_rss":  # cumulative: the baseline, timed second, includes the configured run's peak
        kind = "process_peak_rss_cumulative"
    return {
        "images_per_s": round(iters * batch / seconds, 1),
        "ms_per_iter": round(1000 * seconds / iters, 3),
        "seconds": round(seconds, 3),
        "peak_memory_bytes": peak,
        "peak_memory_kind": kind,
    }


def _baseline_model(settings: RunSettings, num_classes: int, device: torch.device) -> nn.Module:
    """The same architecture and initial weights as the configured run, plain fp32 layout."""
    torch.manual_seed(settings.seed)
    arch = replace(settings.model.arch, num_classes=settings.model.arch.num_classes or num_classes)
    return build_from_arch(arch, bn_group_size=settings.model.bn_group_size).to(device)


def time_configured(settings: RunSettings, bench: BenchSettings, device: torch.device) -> dict[str, Any]:
    """The training step as `train` runs it."""
    tr = settings.trainer
    choice = resolve_precision(tr.amp, tr.channels_last, device)
    amp, cl = choice.amp, choice.channels_last
    if bench.synthetic:
        size = settings.data.resize or (settings.data.crop if settings.data.name == "imagenet" else input_size(settings.model.arch.family))
        num_classes = 1000 if settings.data.name == "imagenet" else 10
        x = torch.randn(tr.batch_size, 3, size, size, device=device)
        y = torch.randint(0, num_classes, (tr.batch_size,), device=device)
        batches = iter(lambda: (x, y), None)
        source = f"synthetic {size}x{size} batches on the device"
    else:
        data = build_training_data(settings.data, settings.seed, batch_size=tr.batch_size,
                                   eval_batch_size=tr.eval_batch_size, device=device, world=World())
        num_classes, batches, source = data.num_classes, data.stream.iterate(0), f"{settings.data.name} pipeline"
    from resnet_repro.training.model import make_model

    m = settings.model
    model = make_model(replace(settings, model=replace(m, num_classes=m.num_classes or num_classes)), device, World())
    mode = compile_mode(tr.compile, device)
    net = maybe_compile(model, mode)
    opt = make_sgd([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=settings.optim.momentum,
                   weight_decay=settings.optim.weight_decay, nesterov=settings.optim.nesterov, device=device)
    model.train()
    step = lambda x, y: train_step(net, opt, x, y, 0.1, amp=amp, channels_last=cl)  # noqa: E731
    r = _time_steps(step, batches, bench.iters, bench.warmup, tr.batch_size, device)
    return {**r, "data": source, "amp": "bf16" if amp else "off", "channels_last": cl, "compile": mode or "off",
            "compile_fell_back": bool(getattr(net, "failed", False)), "precision_reason": choice.reason}


def time_precisions(settings: RunSettings, bench: BenchSettings, device: torch.device) -> dict[str, Any]:
    """The configured step under each of `bench.precisions` (amp and layout forced), with its
    images/s relative to fp32 (or to the first path timed when fp32 is not among them)."""
    out: dict[str, Any] = {}
    for name in bench.precisions:
        amp, cl = PRECISION_PATHS[name]
        s = replace(settings, trainer=replace(settings.trainer, amp=amp, channels_last=cl))
        out[name] = time_configured(s, bench, device)
    ref = out.get("fp32") or next(iter(out.values()), None)
    for r in out.values():
        r["vs_fp32" if "fp32" in out else "vs_first"] = round(r["images_per_s"] / ref["images_per_s"], 2)
    return out


def time_input(settings: RunSettings, bench: BenchSettings, device: torch.device) -> dict[str, Any]:
    """The training input pipeline alone: batches drawn onto the device as `train` gets them,
    no model (how many images/s the input can feed)."""
    tr = settings.trainer
    data = build_training_data(settings.data, settings.seed, batch_size=tr.batch_size,
                               eval_batch_size=tr.eval_batch_size, device=device, world=World())
    batches = data.stream.iterate(0)
    try:
        r = _time_steps(lambda x, y: None, batches, bench.input_iters, bench.warmup, tr.batch_size, device)
    finally:
        batches.close()  # an endless stream: stop its workers (and producer thread) now
    return {k: r[k] for k in ("images_per_s", "ms_per_iter", "seconds")}


def time_imagenet_paths(settings: RunSettings, bench: BenchSettings, device: torch.device) -> dict[str, Any]:
    """Per decode path: input alone and end to end; the ratio to the ceiling when it is timed."""
    from resnet_repro.data.device_input import resolve_decode

    out: dict[str, Any] = {}
    for path in bench.decode_paths:
        resolve_decode(path, device)  # a bad name: one line
        s = replace(settings, data=replace(settings.data, decode=path))
        out[path] = {"input": time_input(s, bench, device), "end_to_end": time_configured(s, bench, device)}
    return out


class _PilCifar(torch.utils.data.Dataset):
    """The textbook CIFAR loader: one PIL image per item, torchvision transforms per image."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: tuple[float, ...]) -> None:
        from torchvision import transforms

        self.x, self.y = x.permute(0, 2, 3, 1).numpy(), y.numpy()
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, (1.0, 1.0, 1.0)),
        ])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def time_baseline(settings: RunSettings, bench: BenchSettings, device: torch.device) -> dict[str, Any]:
    """The identical model from a DataLoader over PIL images, fp32, eager, plain SGD."""
    splits = load_cifar_splits(settings.data, settings.seed)
    mean = tuple(splits.train.x.float().div(255).mean(dim=(0, 2, 3)).tolist())
    loader = torch.utils.data.DataLoader(
        _PilCifar(splits.train.x, splits.train.y, mean), batch_size=settings.trainer.batch_size, shuffle=True,
        num_workers=bench.baseline_workers, drop_last=True, pin_memory=device.type == "cuda",
        persistent_workers=bench.baseline_workers > 0,
    )

    def batches():
        while True:
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    model = _baseline_model(settings, len(splits.classes), device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=settings.optim.momentum,
                          weight_decay=settings.optim.weight_decay)
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    r = _time_steps(step, batches(), bench.iters, bench.warmup, settings.trainer.batch_size, device)
    return {**r, "data": f"torchvision DataLoader, PIL transforms, {bench.baseline_workers} workers",
            "amp": "off", "channels_last": False, "compile": "off"}


def time_concurrent(overrides: list[str], n: int) -> dict[str, Any]:
    """n configured benches at once, as separate processes on the same device."""
    with tempfile.TemporaryDirectory() as tmp:
        keep = [o for o in overrides if not o.startswith(("bench.concurrent", "bench.baseline", "bench.json"))]
        procs = []
        for i in range(n):
            out = Path(tmp) / f"{i}.json"
            cmd = [sys.executable, "-m", "resnet_repro", "bench", *keep, "bench.concurrent=1",
                   "bench.baseline=false", f"bench.json={out}"]
            procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out))
        rates = []
        for proc, out in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise ReproError(f"a concurrent bench failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
            rates.append(json.loads(out.read_text())["configured"]["images_per_s"])
    return {"processes": n, "images_per_s_each": rates, "images_per_s_total": round(sum(rates), 1)}


def run_bench(settings: RunSettings, bench: BenchSettings, overrides: list[str] | None = None) -> dict[str, Any]:
    device = resolve_device(settings.trainer.device)
    result: dict[str, Any] = {
        "command": "python -m resnet_repro bench " + " ".join(overrides or []),
        "exp_name": settings.exp_name,
        "model": settings.model.name,
        "batch_size": settings.trainer.batch_size,
        "iters": bench.iters,
        "warmup": bench.warmup,
        **environment(device),
        "torchvision": torchvision.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_record(),
        "auto_precision": resolve_precision("auto", "auto", device).reason,
    }
    if settings.data.name == "imagenet" and not bench.synthetic:
        from resnet_repro.data.device_input import resolve_decode

        paths = time_imagenet_paths(settings, bench, device)
        result["decode_paths"] = paths
        configured = resolve_decode(settings.data.decode, device)
        result["configured_decode"] = configured
        result["configured"] = (paths[configured]["end_to_end"] if configured in paths
                                else time_configured(settings, bench, device))
        if bench.ceiling:
            ceiling = time_configured(settings, replace(bench, synthetic=True), device)
            result["ceiling"] = ceiling
            for p in paths.values():
                p["end_to_end_vs_ceiling"] = round(p["end_to_end"]["images_per_s"] / ceiling["images_per_s"], 3)
    else:
        result["configured"] = time_configured(settings, bench, device)
    if bench.precisions:
        result["precisions"] = time_precisions(settings, bench, device)
    if bench.baseline and settings.data.name in CIFAR_SOURCES and not bench.synthetic:
        result["baseline"] = time_baseline(settings, bench, device)
        result["speedup"] = round(result["configured"]["images_per_s"] / result["baseline"]["images_per_s"], 2)
        for r in result.get("precisions", {}).values():
            r["vs_baseline"] = round(r["images_per_s"] / result["baseline"]["images_per_s"], 2)
    if bench.concurrent > 1:
        c = time_concurrent(overrides or [], bench.concurrent)
        c["vs_one_run"] = round(c["images_per_s_total"] / result["configured"]["images_per_s"], 2)
        result["concurrent"] = c
    return result


def format_result(r: dict[str, Any]) -> str:
    lines = [
        f"bench {r['exp_name']} ({r['model']}), batch {r['batch_size']}, {r['iters']} timed iterations after "
        f"{r['warmup']} warm-up, on {r['device']}, torch {r['torch']}",
    ]
    if "cpu" in r and r["device"].startswith("cpu"):
        c = r["cpu"]
        lines.append(f"CPU {c['model']} (torch kernels {c['torch_capability']}; native bf16: "
                     f"{', '.join(c['native_bf16']) or 'none'})")
    if "precision_reason" in r.get("configured", {}):
        lines.append(f"precision: {r['configured']['precision_reason']}")
    lines.append(f"{'path':<20} {'images/s':>10} {'ms/iter':>9} {'peak memory':>12}  setup")
    rows = [(name, r[name]) for name in ("configured", "baseline") if name in r]
    rows[1:1] = list(r.get("precisions", {}).items())
    for name, x in rows:
        setup = f"{x['data']}; amp {x['amp']}, channels_last {x['channels_last']}, compile {x['compile']}"
        ratio = "".join(f", {x[k]:.2f}x {k[3:]}" for k in ("vs_fp32", "vs_first", "vs_baseline") if k in x)
        lines.append(f"{name:<20} {x['images_per_s']:>10.1f} {x['ms_per_iter']:>9.2f} "
                     f"{x['peak_memory_bytes'] / 2**20:>9.0f} MiB  {setup}{ratio}")
    if "decode_paths" in r:
        lines.append(f"ImageNet input (configured: data.decode={r['configured_decode']}), images/s:")
        for name, p in r["decode_paths"].items():
            vs = f", {100 * p['end_to_end_vs_ceiling']:.0f}% of the ceiling" if "end_to_end_vs_ceiling" in p else ""
            lines.append(f"  decode={name:<8} input alone {p['input']['images_per_s']:>9.1f}   "
                         f"end to end {p['end_to_end']['images_per_s']:>9.1f}{vs}")
        if "ceiling" in r:
            lines.append(f"  synthetic ceiling (batches already on the device): {r['ceiling']['images_per_s']:.1f}")
    if "speedup" in r:
        lines.append(f"speed-up: {r['speedup']:.2f}x the naive baseline's images/s")
    if "concurrent" in r:
        c = r["concurrent"]
        lines.append(f"{c['processes']} concurrent runs: {c['images_per_s_total']:.1f} images/s in total "
                     f"({c['vs_one_run']:.2f}x one run alone)")
    return "\n".join(lines)
