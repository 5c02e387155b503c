"""The one torch training loop every torch benchmark uses.

``fit`` trains with Adam or SGD (weight decay, step or cosine schedule),
a precision setting (``precision="auto"``, opt-in on CPUs: bf16 autocast and channels_last on a CPU with bf16
units, the float16 mixed precision on CUDA, float32 elsewhere; :mod:`histolean.core.precision`),
a tqdm progress bar that works in notebooks and
terminals, the best checkpoint on a validation metric (saved atomically,
restored at the end, loaded with ``weights_only=True``), early stopping and
the time of every epoch. The same code runs on CUDA or CPU.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from histolean.util import atomic, distributed, dryrun
from histolean.core import metrics, precision as precisions, probe

NORM_MEAN = 0.5
NORM_STD = 0.5


def default_device() -> torch.device:
    """CUDA when present, else CPU; no code change needed between the two.
    Under torchrun each rank's own GPU (LOCAL_RANK), also before ``fit`` joins the ranks."""
    if torch.cuda.is_available() and distributed.launched():
        return torch.device("cuda", distributed.local_rank())
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices); deterministic cuDNN choices."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


# --------------------------------------------------------------------------- data

class ArrayDataset(Dataset):
    """uint8 images (N, H, W, 3) + int labels -> normalised float CHW tensors.

    ``augment`` applies the flips and 90-degree rotations under which tissue
    patches keep their label; ``size`` resizes (bilinear) to ``size x size``.
    """

    def __init__(self, images: np.ndarray, labels, augment: bool = False, size: int | None = None, seed: int = 0):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.augment, self.size = augment, size
        self.reseed(seed)

    def reseed(self, seed) -> None:
        """Restart the augmentation draws (``fit`` calls it, so a run never depends on earlier ones)."""
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.augment:
            img = np.rot90(img, int(self.rng.integers(4)))
            if self.rng.random() < 0.5:
                img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)[0]
        return (x - NORM_MEAN) / NORM_STD, self.labels[i]


def _seed_worker(worker_id: int) -> None:
    """Each loader worker augments with its own seed, derived from the loader's generator.

    torch gives worker ``i`` the seed ``base + i``, with ``base`` drawn from the loader's
    generator for every pass; a dataset copied into the worker restarts its draws from it.
    """
    info = torch.utils.data.get_worker_info()
    if hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)


def make_loader(images, labels, batch_size: int = 32, shuffle: bool = False, augment: bool = False,
                seed: int = 0, size: int | None = None, num_workers: int = 0) -> DataLoader:
    """A DataLoader over uint8 image arrays, reproducible for a given seed (``fit`` reseeds it).

    Workers start from a fork server, not by forking this process: a process that already runs
    OpenVINO, ONNX Runtime or TensorFlow threads (a notebook, the test session) can crash in a
    forked child.
    """
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ArrayDataset(images, labels, augment=augment, size=size, seed=seed),
                      batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=num_workers,
                      worker_init_fn=_seed_worker if num_workers > 0 else None,
                      multiprocessing_context="forkserver" if num_workers > 0 else None,
                      pin_memory=torch.cuda.is_available())


def reseed_loader(loader, seed: int) -> None:
    """Restart a loader's shuffling and augmentation from ``seed``.

    Resets the loader's generator (shuffling, and the per-pass worker seeds with
    ``num_workers > 0``) and calls ``dataset.reseed(seed)`` where the dataset has it, so two
    fits with one seed see the same batches whatever the loader served before.
    """
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    sampler_generator = getattr(getattr(loader, "sampler", None), "generator", None)
    if sampler_generator is not None and sampler_generator is not generator:
        sampler_generator.manual_seed(seed)
    dataset = getattr(loader, "dataset", None)
    if hasattr(dataset, "reseed"):
        dataset.reseed(seed)


# --------------------------------------------------------------------------- loop

@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    monitor: str = "val_auc"
    stopped_early: bool = False
    precision: str = "fp32"       # the precision trained in ("fp32", "bf16", "fp16_amp"): rows record it

    @property
    def time_per_epoch_s(self) -> float:
        times = [h["epoch_time_s"] for h in self.history]
        return float(np.mean(times)) if times else float("nan")

    @property
    def train_time_s(self) -> float:
        return float(sum(h["epoch_time_s"] for h in self.history))


def _make_optimizer(model, optimizer, lr, weight_decay, momentum) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a torch.optim.Optimizer, got {optimizer!r}")


def _make_schedule(opt, schedule, epochs, step_size, gamma):
    if schedule is None or isinstance(schedule, torch.optim.lr_scheduler.LRScheduler):
        return schedule
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    raise ValueError(f"schedule must be None, 'step', 'cosine' or a torch LR scheduler, got {schedule!r}")


def _better(value: float, best: float | None, monitor: str) -> bool:
    if not np.isfinite(value):
        return best is None
    if best is None or not np.isfinite(best):
        return True
    return value < best if monitor.endswith("loss") else value > best


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **extra) -> Path:
    """Atomically save ``model.state_dict()`` (+ plain-Python extras)."""
    with atomic.atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), **extra}, tmp)
    return Path(path)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, map_location=None) -> dict:
    """Load a checkpoint saved by ``save_checkpoint`` (tensors only: ``weights_only=True``)."""
    try:
        ckpt = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # truncated or foreign files
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                         f"delete it and train again") from None
    model.load_state_dict(ckpt["state_dict"])
    return ckpt


def fit(model: nn.Module, train_loader, val_loader=None, *, epochs: int,
        optimizer="adam", lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9,
        schedule=None, step_size: int = 5, gamma: float = 0.5,
        loss_fn: Callable | None = None, monitor: str = "val_auc", patience: int | None = None,
        checkpoint_path: str | os.PathLike | None = None, device=None, amp: bool = True,
        precision: str | None = None, progress: bool = True, after_backward: Callable | None = None,
        on_step_end: Callable | None = None, seed: int = 0, desc: str = "train") -> FitResult:
    """Train ``model`` and restore its best weights (by ``monitor`` on ``val_loader``).

    Under ``torchrun --nproc_per_node=N`` the same call trains data-parallel
    (see :mod:`histolean.util.distributed`): the loaders' batch size stays the global
    batch, metrics cover all ranks' samples, only rank 0 saves the checkpoint.

    ``monitor`` is 'val_auc', 'val_accuracy' (higher is better) or 'val_loss'
    (lower is better); without a validation loader the last epoch is kept.
    ``after_backward(model, step)`` runs between ``loss.backward()`` and the
    optimiser step (ResRep resets gradients there); ``on_step_end(model, step)``
    after it. The best weights live in memory and, when ``checkpoint_path`` is
    given, on disk too. ``seed`` seeds every RNG and restarts the training loader's
    shuffling and augmentation (:func:`reseed_loader`): one seed, one result.

    ``precision`` ("auto", "fp32" or "bf16") is resolved by :func:`histolean.core.precision.resolve`
    and recorded in ``FitResult.precision``: "auto" trains in bf16 autocast with channels_last on a
    CPU with bf16 units, in float16 mixed precision on CUDA (``amp=False``: float32), float32
    elsewhere. The default (None) is float32 on a CPU and the float16 mixed precision on CUDA, as the
    study ran before bf16: a notebook opts into "auto" once the bf16-vs-fp32 check on its task
    (``benchmarks/bf16_check.py``) has shown equal AUCs. Runs whose point is numerical equality pass
    "fp32". Validation runs in float32, so
    the monitored value is the one a later :func:`evaluate` gives; the model is handed back in the
    default memory format whatever it trained in.
    """
    from tqdm.auto import tqdm

    seed_everything(seed)
    reseed_loader(train_loader, seed)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    if precision is None:
        precision = "auto" if device.type == "cuda" else "fp32"
    used = precisions.resolve(precision, device, amp=amp)
    channels_last = precisions.uses_channels_last(used, device.type)
    if channels_last:   # before DDP wraps the model and the optimiser takes its parameters
        model.to(memory_format=torch.channels_last)
    distributed.init()   # joins the ranks under torchrun; nothing otherwise
    net = distributed.wrap(model, device)   # DDP when distributed; `model` itself otherwise
    train_loader = distributed.shard_loader(train_loader, train=True, seed=seed, name="train_loader")
    if val_loader is not None:
        val_loader = distributed.shard_loader(val_loader, train=False, name="val_loader")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    opt = _make_optimizer(model, optimizer, lr, weight_decay, momentum)
    sched = _make_schedule(opt, schedule, epochs, step_size, gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=used == "fp16_amp")   # bf16 needs no loss scaling

    result = FitResult(monitor=monitor, precision=used)
    best_state, bad_epochs, step = None, 0, 0
    # a dry run: one epoch of one batch, measured (histolean.util.dryrun); the same loop as the full run
    dry, asked_epochs, steps_per_epoch = dryrun.active(), epochs, len(train_loader)
    epochs = dryrun.first(epochs)
    bar = tqdm(total=epochs * dryrun.first(steps_per_epoch), desc=desc,
               disable=not progress or not distributed.is_main(), leave=False)
    for epoch in range(1, epochs + 1):
        model.train()
        distributed.set_epoch(train_loader, epoch)
        t0, total, count = time.perf_counter(), 0.0, 0
        for x, y in itertools.islice(train_loader, dryrun.first(steps_per_epoch)):
            watch = probe.activations(model) if dry else contextlib.nullcontext({})
            t_step = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if step == 0 and used == "bf16" and device.type == "cpu" and x.ndim == 4:
                hazard = precisions.bf16_cpu_hazard(model, x)
                if hazard and precisions.normalize(precision) == "auto":   # asked for bf16 explicitly: kept
                    used = result.precision = "fp32"
                    warnings.warn(f"{desc}: training in float32, not bf16: {hazard} convolves a 1-pixel map at "
                                  f"{x.shape[-1]} px input, where oneDNN's bf16 gradients turn NaN", stacklevel=2)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with watch as seen, precisions.autocast(used, device.type):
                loss = loss_fn(net(x), y)
            batch_loss = distributed.average(loss.detach())   # the global batch's: every rank stops together
            if not torch.isfinite(batch_loss):
                raise FloatingPointError(f"loss became {batch_loss.item()} at epoch {epoch}, step {step}; "
                                         f"lower the learning rate (now {opt.param_groups[0]['lr']:g})")
            scaler.scale(loss).backward()
            if after_backward is not None:
                scaler.unscale_(opt)
                after_backward(model, step)
            scaler.step(opt)
            scaler.update()
            if on_step_end is not None:
                on_step_end(model, step)
            if dry:
                dryrun.log("fit", desc=desc, model=type(model).__name__, batch=len(y), input_shape=list(x.shape),
                           step_s=time.perf_counter() - t_step, steps_per_epoch=steps_per_epoch,
                           epochs=asked_epochs, param_bytes=probe.parameter_bytes(model), device=device.type,
                           precision=used, **seen)
            step += 1
            total += batch_loss.item() * len(y)
            count += len(y)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{total / max(count, 1):.4f}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        row = {"epoch": epoch, "train_loss": total / max(count, 1),
               "epoch_time_s": time.perf_counter() - t0, "lr": opt.param_groups[0]["lr"]}
        if sched is not None:
            sched.step()
        if val_loader is not None:
            row.update({f"val_{k}": v for k, v in evaluate(model, val_loader, device=device, loss_fn=loss_fn,
                                                           max_batches=dryrun.first(len(val_loader))).items()})
        result.history.append(row)

        value = row.get(monitor, float("nan"))
        if val_loader is None or _better(value, result.best_value, monitor):
            result.best_epoch, result.best_value, bad_epochs = epoch, value, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            if checkpoint_path is not None and distributed.is_main():
                save_checkpoint(model, checkpoint_path, epoch=epoch, monitor=monitor, value=float(value))
        else:
            bad_epochs += 1
            if patience is not None and bad_epochs >= patience:
                result.stopped_early = True
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if channels_last:   # callers (export, pruning, FLOP counting) expect the default layout
        model.to(memory_format=torch.contiguous_format)
    return result


def _positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(class 1): softmax over two or more logits, sigmoid of a single one."""
    if logits.ndim == 2 and logits.shape[1] > 1:
        return torch.softmax(logits, 1)[:, 1]
    return torch.sigmoid(logits.reshape(-1))


@torch.no_grad()
def predict(model: nn.Module, loader, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Probability of class 1 (softmax over 2 logits, or sigmoid of 1) and the labels."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    probs, labels = [], []
    for x, y in loader:
        probs.append(_positive_probability(model(x.to(device)).float()).cpu().numpy())
        labels.append(np.asarray(y))
    return np.concatenate(probs) if probs else np.zeros(0), np.concatenate(labels) if labels else np.zeros(0)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None, loss_fn: Callable | None = None, precision: str = "fp32",
             max_batches: int | None = None) -> dict:
    """Mean loss, AUC, accuracy and n over ``loader`` (or its first ``max_batches``; model in eval mode), in
    float32 unless ``precision`` ("auto", "bf16", ...) says otherwise."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.to(device).eval()
    probs, labels, total, count = [], [], 0.0, 0
    used = precision if precision in precisions.RESOLVED else precisions.resolve(precision, device)
    for x, y in itertools.islice(loader, max_batches):
        x, y = x.to(device), y.to(device)
        with precisions.autocast(used, device.type):
            logits = model(x).float()
        total += loss_fn(logits, y).item() * len(y)
        count += len(y)
        probs.append(_positive_probability(logits).cpu().numpy())
        labels.append(y.cpu().numpy())
    probs, labels = np.concatenate(probs) if probs else np.zeros(0), np.concatenate(labels) if labels else np.zeros(0)
    if distributed.is_sharded(loader):   # this rank saw its share: metrics over all ranks' samples
        probs, labels, total, count = distributed.gather_predictions(probs, labels, total, count)
    if not count:
        raise ValueError("evaluation loader is empty")
    out = metrics.classification_metrics(labels, probs, loss=total / count)
    return {k: out[k] for k in ("loss", "auc", "accuracy", "n")}


@torch.no_grad()
def recalibrate_batchnorm(net: torch.nn.Module, loader, device=None) -> None:
    """Re-estimate every BN layer's running statistics over ``loader`` (train mode, no gradients).

    A few steps at ResRep's SGD learning rates move the weights faster than BN's running averages
    follow; evaluated (and folded into the convs by conversion) with stale statistics, the network
    outputs garbage. Exact averages over the training windows fix that. (The torch copy; the Keras
    one lives with the Keras zoo, since core does not import TensorFlow.)
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    net.train()
    with torch.no_grad():
        for x, _ in itertools.islice(loader, dryrun.first(len(loader))):   # a dry run: one batch
            net(x.to(device) if device is not None else x)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    net.eval()
