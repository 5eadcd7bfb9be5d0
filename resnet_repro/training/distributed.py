"""Data-parallel training under `torchrun`: process group, devices, reductions.

`torchrun --nproc_per_node=8 -m resnet_repro train ...` starts one process per GPU with RANK,
LOCAL_RANK and WORLD_SIZE set; a plain `python -m resnet_repro train` is a world of one and
every function here is then a no-op. The paper trained with BN statistics per device and no
synchronisation (§4.2: 2 GPUs; ImageNet: 8 GPUs per the authors' released-model notes,
github.com/KaimingHe/deep-residual-networks, not §3.4), which is what plain DDP does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from resnet_repro.errors import ConfigError
from resnet_repro.config.settings import ModelSettings, TrainerSettings


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The process's place in the job: torchrun's RANK/LOCAL_RANK/WORLD_SIZE, or a SLURM job
    step of several tasks (Hydra's submitit launcher), whose variables submitit translates."""
    # Only inside a submitit job: a plain `python` in an salloc shell or sbatch script also sees
    # SLURM_NTASKS, and must stay a world of one rather than wait for peers that never start.
    submitit_job = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    if "WORLD_SIZE" not in os.environ and submitit_job and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment  # present: submitit started us

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0")), size=size)


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns this process's device."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over all processes (in place where distributed); returns it."""
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def average_buffers(model: torch.nn.Module, world: World) -> None:
    """Average floating-point buffers (BN running mean/var) over processes, in place."""
    if not world.distributed:
        return
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b, op=dist.ReduceOp.SUM)
            b.div_(world.size)


def all_reduce_max(t: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def per_process_batch(global_batch: int, world: World) -> int:
    """The paper's batch sizes are totals (128 on CIFAR, 256 on ImageNet); each process
    takes an equal share."""
    if global_batch % world.size:
        raise ConfigError(
            f"trainer.batch_size={global_batch} (the global batch) is not divisible by {world.size} processes"
        )
    return global_batch // world.size


def per_process_batch_checked(model: ModelSettings, trainer: TrainerSettings, world_size: int) -> int:
    """Each process's share of the global batch, refusing BN groups that do not tile it.

    A BN group larger than the per-process batch cannot be formed: the layer would silently
    normalise over the smaller batch (other statistics than the recipe states), so it is an
    error. Called by `train` as soon as the world size is known, before any data or file."""
    n = per_process_batch(trainer.batch_size, World(size=world_size))
    g = model.bn_group_size
    if g is not None and n % g:
        raise ConfigError(
            f"model.bn_group_size={g} does not divide the per-process batch of {n} images "
            f"(trainer.batch_size={trainer.batch_size} over {world_size} process(es)); "
            f"use a batch that is a multiple of {g * world_size} or a smaller group"
        )
    return n
