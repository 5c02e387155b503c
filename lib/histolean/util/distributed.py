"""Data-parallel training across processes: torchrun, DistributedDataParallel, DistributedSampler.

``train.fit`` calls these helpers so that the same code runs in one process and
under ``torchrun --nproc_per_node=N`` (one process per GPU, on one node or many):
every rank trains on its share of each batch, DDP averages the gradients, the
validation metrics are computed on all ranks' predictions together, and only
rank 0 writes files. Outside torchrun every helper is a no-op.

The global batch stays the loader's ``batch_size``: with N ranks each one takes
``batch_size / N`` samples per step, so learning rates and schedules need no
change, and N ranks follow the trajectory of one process that sees the same
batches (up to float rounding in the gradient sum).

Torch is imported lazily: ``records`` asks :func:`is_main` without paying for it.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys

import numpy as np


def launched() -> bool:
    """True when a launcher (torchrun) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _group():
    """``torch.distributed`` when a process group is up, else None (torch never imported for it)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _group()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    dist = _group()
    return dist.get_rank() if dist else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK): the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0, or a plain single process: the one that writes results, checkpoints and figures."""
    return rank() == 0


def is_distributed() -> bool:
    """A process group of more than one rank is up."""
    dist = _group()
    return dist is not None and dist.get_world_size() > 1


def init(backend: str | None = None) -> bool:
    """Join the process group torchrun describes (once per process); True when distributed.

    nccl on CUDA, gloo on CPU (``$HISTOLEAN_DIST_BACKEND`` overrides). A group the
    caller set up already (``init_process_group`` in a spawned worker) is used as is.
    """
    if _group():
        return is_distributed()
    if not launched():
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
                           f"the processes with torchrun (it sets them), or unset WORLD_SIZE")
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())   # plain "cuda" then means this rank's GPU
    backend = backend or os.environ.get("HISTOLEAN_DIST_BACKEND") or (
        "nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return True


def wrap(model, device):
    """``model`` in DistributedDataParallel when distributed, else ``model`` itself.

    The wrapper shares the module's parameters: training through it updates
    ``model``, which the caller keeps using for evaluation and checkpoints.
    BatchNorm layers keep DDP's default: statistics over each rank's share.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type != "cuda":
        return DistributedDataParallel(model)
    import torch

    return DistributedDataParallel(model, device_ids=[device.index if device.index is not None
                                                      else torch.cuda.current_device()])


@functools.cache
def _unpadded_sampler_class():
    """Defined on first use: importing this module must not import torch (records uses it)."""
    from torch.utils.data import DistributedSampler

    class UnpaddedDistributedSampler(DistributedSampler):
        """Every sample exactly once over all ranks (ranks may differ by one): for evaluation,
        where DistributedSampler's padding would count a few samples twice."""

        def __iter__(self):
            return iter(range(self.rank, len(self.dataset), self.num_replicas))

        def __len__(self):
            return len(range(self.rank, len(self.dataset), self.num_replicas))

    return UnpaddedDistributedSampler


def shard_loader(loader, *, train: bool, seed: int = 0, name: str = "loader"):
    """The same DataLoader over this rank's share (a DistributedSampler); unchanged when not distributed.

    Training: shuffled like the original (a new order each epoch via :func:`set_epoch`),
    ``batch_size / world_size`` per rank so the global batch is unchanged. Evaluation:
    the loader's batch size, every sample exactly once over all ranks.
    """
    if not is_distributed():
        return loader
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    n = world_size()
    if not isinstance(loader, DataLoader) or loader.batch_size is None or not hasattr(loader.dataset, "__len__"):
        raise TypeError(f"{name}: training on {n} processes needs a torch DataLoader with a batch_size over a "
                        f"map-style dataset, got {type(loader).__name__}; build it with train.make_loader")
    if isinstance(loader.sampler, DistributedSampler):
        return loader  # the caller sharded it already
    batch = loader.batch_size
    if train:
        if batch % n:
            raise ValueError(f"{name}: the global batch size {batch} is not divisible by the {n} processes; "
                             f"use a multiple of {n}")
        batch //= n
        if hasattr(loader.dataset, "reseed"):   # each rank its own augmentation draws, not n copies of one
            loader.dataset.reseed([seed, rank()])
        sampler = DistributedSampler(loader.dataset, num_replicas=n, rank=rank(),
                                     shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
    else:
        sampler = _unpadded_sampler_class()(loader.dataset, num_replicas=n, rank=rank(), shuffle=False)
    workers = loader.num_workers
    return DataLoader(loader.dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn, timeout=loader.timeout, generator=loader.generator,
                      persistent_workers=loader.persistent_workers if workers else False,
                      prefetch_factor=loader.prefetch_factor if workers else None)


def set_epoch(loader, epoch: int) -> None:
    """A new shuffle per epoch for samplers that need telling (DistributedSampler)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def is_sharded(loader) -> bool:
    """The loader feeds only this rank's share: its results must be gathered."""
    if not is_distributed():
        return False
    from torch.utils.data import DistributedSampler

    return isinstance(getattr(loader, "sampler", None), DistributedSampler)


def average(value):
    """The mean of a scalar tensor over all ranks (the global batch's loss); itself when not distributed."""
    dist = _group()
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def gather_predictions(probs: np.ndarray, labels: np.ndarray, loss_sum: float, count: int):
    """All ranks' predictions and loss sums, concatenated: every rank gets the metrics of the whole set."""
    dist = _group()
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (probs, labels, float(loss_sum), int(count)))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            sum(p[2] for p in parts), sum(p[3] for p in parts))
