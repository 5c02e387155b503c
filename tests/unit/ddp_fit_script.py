"""A small training run through histolean.core.train.fit, for tests/test_distributed.py.

    torchrun --nproc_per_node=2 ddp_fit_script.py OUT      data-parallel (gloo on CPU)
    python ddp_fit_script.py OUT --reference                one process, the same global batches

The code is the same in both; only the reference's loader is built with a one-rank
DistributedSampler so that its batches come in the order the two ranks share out.
Each rank logs the files the library writes (writes_rank<R>.log) and its history
(history_rank<R>.json): the test reads these, they are not library outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from histolean import train
from histolean.util import atomic
from histolean.study import records

GLOBAL_BATCH, EPOCHS = 16, 4


def toy(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
    return x, (x[..., 0].mean((1, 2)) > 127).astype(np.int64)


def _log_writes(path: Path) -> None:
    real = atomic.atomic_path

    @contextlib.contextmanager
    def logged(target):
        with path.open("a") as f:
            f.write(f"{Path(target).name}\n")
        with real(target) as tmp:
            yield tmp

    atomic.atomic_path = logged


def main(out: str | os.PathLike, reference: bool = False) -> dict:
    out = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    if not reference:
        _log_writes(out / f"writes_rank{rank}.log")
    x, y = toy(96, seed=0)
    xv, yv = toy(45, seed=1)      # 45: the ranks get 23 and 22 validation samples
    train_loader = train.make_loader(x, y, batch_size=GLOBAL_BATCH, shuffle=True, seed=0)
    if reference:
        ds = train_loader.dataset
        train_loader = DataLoader(ds, batch_size=GLOBAL_BATCH,
                                  sampler=DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 16), nn.ReLU(), nn.Linear(16, 2))
    res = train.fit(model, train_loader, train.make_loader(xv, yv, batch_size=32), epochs=EPOCHS, lr=1e-2,
                    checkpoint_path=out / "best.pt", progress=False, seed=0,
                    precision="fp32")   # the point is equality with one process: no bf16 rounding
    rec = records.Recorder("ddp_toy", out, profile="smoke")
    rec.add(dataset="toy", data_kind="synthetic", model="mlp", method="fit",
            metrics={"val_auc": res.best_value}, best_epoch=res.best_epoch)
    report = {"history": [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in res.history],
              "best_epoch": res.best_epoch,
              "weights": torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()}
    (out / f"history_{'reference' if reference else f'rank{rank}'}.json").write_text(json.dumps(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1], reference="--reference" in sys.argv)
