"""Which images a run sees, in one place: derived seeds, the epoch order (one sampler for the
CIFAR tensor stream and the ImageNet loader) and the seeded train/held-out split.

A batch is a pure function of (seed, global iteration): iteration `it` is in epoch
it // steps_per_epoch; each epoch is a permutation seeded by (seed, epoch), cut into global
batches of batch_size * world_size (the last partial batch is dropped), and rank r takes the
r-th slice of its global batch. So resuming needs only the iteration number, and N processes
train on exactly the batches of one process.
"""

from __future__ import annotations

import hashlib

import torch

from resnet_repro.errors import DataError


def derived_seed(seed: int, stream: str, index: int) -> int:
    # Independent seeds per (seed, purpose, epoch-or-iteration), without arithmetic collisions.
    digest = hashlib.blake2b(f"{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpochSampler:
    """The images of each iteration's global batch and of this rank's share of it. The epoch's
    permutation is drawn on the CPU and kept (on `device`) until the epoch changes."""

    def __init__(
        self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        device: torch.device | str = "cpu", what: str = "training images",
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in a world of {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = n // self.global_batch  # drop last: every step has a full batch
        if self.steps_per_epoch == 0:
            raise DataError(f"{n} {what} are fewer than one global batch of {self.global_batch}")
        self.device = torch.device(device)
        self._perm_epoch: int | None = None
        self._perm = torch.empty(0, dtype=torch.int64)

    def epoch_of(self, it: int) -> int:
        return it // self.steps_per_epoch

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(derived_seed(self.seed, "perm", epoch))
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
            self._perm_epoch = epoch
        return self._perm

    def global_indices(self, it: int) -> torch.Tensor:
        """Indices of the global batch of iteration `it` (all ranks), on `device`."""
        if it < 0:
            raise ValueError(f"iteration must be >= 0, got {it}")
        perm = self._permutation(self.epoch_of(it))
        start = (it % self.steps_per_epoch) * self.global_batch
        return perm[start : start + self.global_batch]

    def rank_slice(self, batch: int | None = None) -> slice:
        """This rank's part of a global batch (of `batch_size` each unless `batch`)."""
        b = self.batch_size if batch is None else batch
        return slice(self.rank * b, (self.rank + 1) * b)

    def indices(self, it: int) -> torch.Tensor:
        """Indices of this rank's images in iteration `it`."""
        return self.global_indices(it)[self.rank_slice()]


def holdout_indices(n: int, held: int, seed: int, what: str = "val_size") -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): a fixed draw of `held` of `n` training images by its own generator
    seeded with `seed` (independent of the global RNG). Both parts keep the original order."""
    if not 0 <= held < n:
        raise DataError(f"{what} must be in [0, {n}) for a training split of {n} images, got {held}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[held:].sort().values, perm[:held].sort().values
