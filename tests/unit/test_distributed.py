"""Data-parallel training: fit under torchrun (2 ranks, gloo on CPU) against one process; rank-0-only writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from histolean.util import distributed
from histolean.study import records

SCRIPT = Path(__file__).with_name("ddp_fit_script.py")


@pytest.mark.slow
def test_torchrun_two_ranks_follow_one_process_and_write_once(tmp_path):
    """2 ranks x 8 samples per step == 1 process x 16 samples per step, batch for batch.

    Tolerance 1e-5 (relative on losses, absolute on weights): DDP averages the two ranks'
    mean gradients instead of taking one mean over 16 samples, so float32 sums run in another
    order (about 1e-7 per step; 9e-8 on the weights after 24 Adam steps when measured).
    """
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import ddp_fit_script
    finally:
        sys.path.remove(str(SCRIPT.parent))
    ref_dir, ddp_dir = tmp_path / "one", tmp_path / "two"
    ref_dir.mkdir(), ddp_dir.mkdir()
    reference = ddp_fit_script.main(ref_dir, reference=True)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(SCRIPT), str(ddp_dir)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((ddp_dir / f"history_rank{r}.json").read_text()) for r in (0, 1)]

    # both ranks hold the same model and the same metrics, gathered over all 45 validation samples
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["weights"] == ranks[1]["weights"]
    assert [h["val_n"] for h in ranks[0]["history"]] == [45] * 4
    # ... and follow the one-process run
    for key in ("train_loss", "val_loss", "val_auc", "val_accuracy"):
        assert [h[key] for h in ranks[0]["history"]] == pytest.approx([h[key] for h in reference["history"]],
                                                                     rel=1e-5), key
    assert ranks[0]["best_epoch"] == reference["best_epoch"]
    assert np.allclose(ranks[0]["weights"], reference["weights"], rtol=0, atol=1e-5)
    losses = [h["train_loss"] for h in reference["history"]]
    assert losses[-1] < 0.5 * losses[0]   # it trained: the trajectory compared is not flat

    # exactly one set of outputs: rank 0 wrote the checkpoint and the rows, rank 1 nothing
    assert sorted(set((ddp_dir / "writes_rank0.log").read_text().split())) == ["best.pt", "ddp_toy.jsonl"]
    assert not (ddp_dir / "writes_rank1.log").exists()
    rows = records.read_rows(ddp_dir, "ddp_toy")
    assert len(rows) == 1 and rows[0]["world_size"] == 2
    assert not [p.name for p in ddp_dir.rglob(".*")]   # no temporary files left behind


def test_recorder_writes_only_on_rank_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rec = records.Recorder("b", tmp_path, profile="smoke")
    rec.add(dataset="d", data_kind="none", model="m", method="x")
    assert rec.rows[0]["world_size"] == 2   # the rank keeps its rows for the notebook's own use
    assert rec.save_figure(None, "f") == tmp_path / "figures" / "b__f.png"
    assert not list(tmp_path.rglob("*"))
    monkeypatch.setenv("RANK", "0")
    records.Recorder("b", tmp_path, profile="smoke").add(dataset="d", data_kind="none", model="m", method="x")
    assert len(records.read_rows(tmp_path, "b")) == 1


def test_single_process_is_untouched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    loader = object()
    assert not distributed.init() and not distributed.is_distributed() and distributed.is_main()
    assert distributed.shard_loader(loader, train=True) is loader and not distributed.is_sharded(loader)


def test_half_configured_launch_is_a_clear_error(monkeypatch):
    from histolean import train

    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    x = np.zeros((4, 2, 2, 3), np.uint8)
    with pytest.raises(RuntimeError, match="torchrun"):
        train.fit(__import__("torch").nn.Linear(12, 2), train.make_loader(x, [0, 1, 0, 1]), epochs=1, progress=False)
