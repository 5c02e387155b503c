"""The study under torchrun: every rank executes the same notebooks; their ``fit`` calls train data-parallel.

    torchrun --standalone --nproc_per_node=8 -m histolean.cli run --profile paper --only monuseg_pruning

Each rank's runner executes the notebook in a kernel of its own that inherits the
rank's torchrun variables, so ``train.fit`` in the notebook joins the other ranks'
kernels (:mod:`histolean.util.distributed`). Rank 0 decides what runs (the local
runner's resume rule) and writes what a local run writes: the executed notebook,
the manifest, the rows, the figures. The other ranks execute into a scratch
folder. Each benchmark's kernels rendezvous on a fresh port, since a process
group lives as long as its kernel.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import tempfile
from pathlib import Path

from histolean.study import runner, validate
from histolean.util.paths import notebook_path, project_root

RUNNER_TIMEOUT_CELLS = 20   # the runners wait for the other ranks up to this many cell timeouts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def run(profile: str = "default", only: list[str] | None = None, force: bool = False,
        root: str | os.PathLike | None = None, data_root: str | None = None,
        overrides: list[str] | None = None) -> list[runner.Outcome]:
    """``runner.run`` for one rank of a torchrun launch; every rank gets the same outcomes."""
    import torch.distributed as dist

    root = project_root(root)
    cfg = runner.apply_overrides(runner.load_profile(profile, root), overrides)
    if not dist.is_initialized():
        # the runners' own group (decisions, ports, outcomes); a rank may wait for the others to finish
        # a notebook, so for as long as a notebook may run, not gloo's default 30 minutes
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=RUNNER_TIMEOUT_CELLS * float(
            cfg["cell_timeout_s"])))
    rank, world = dist.get_rank(), dist.get_world_size()
    names = [n for n in cfg["benchmarks"] if not only or n in only]
    unknown = sorted(set(only or ()) - set(cfg["benchmarks"]))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown} for profile {profile!r}; known: {list(cfg['benchmarks'])}")
    out = runner.output_dir(profile, root)
    validate.check_profile({**cfg, "benchmarks": {n: runner.benchmark_parameters(n, cfg, out, data_root)
                                                  for n in names}}, root)   # every rank stops alike
    scratch = Path(tempfile.mkdtemp(prefix=f"histolean-rank{rank}-"))
    data_root = data_root if data_root is not None else os.environ.get("HISTOLEAN_DATA", "")
    outcomes = []
    for name in names:
        decision = [None]
        if rank == 0:
            notebook = notebook_path(root, name)
            done = (not force and notebook.exists() and runner.is_complete(
                out, name, runner.fingerprint(notebook, runner.benchmark_parameters(name, cfg, out, data_root))))
            decision = [(done, _free_port())]
        dist.broadcast_object_list(decision, src=0)
        done, port = decision[0]
        if done:
            outcomes.append(runner.Outcome(name, "skipped"))
            continue
        kernel_env = {"MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "False"}
        saved = {k: os.environ.get(k) for k in kernel_env}
        os.environ.update(kernel_env)   # the kernel papermill starts inherits these
        try:
            outcome = runner.run_benchmark(name, cfg, root, out if rank == 0 else scratch / name, force=True,
                                          data_root=data_root)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        every = [None] * world
        dist.all_gather_object(every, (outcome.status, outcome.error))
        failed = [(r, err) for r, (status, err) in enumerate(every) if status == "failed"]
        if failed:   # one rank's failure fails the benchmark, with every failing rank's error
            error = "; ".join(f"rank {r}: {err}" for r, err in failed)
            if rank == 0 and outcome.status == "ok":   # its manifest says ok: overwrite it
                runner._record_failure(out, name, "", outcome.seconds, error)
            outcome = runner.Outcome(name, "failed", outcome.seconds, error)
        outcomes.append(outcome)
        if rank == 0:
            print(f"{name}: {outcome.status}" + (f" in {outcome.seconds:.0f}s" if outcome.seconds else "")
                  + (f" -- {outcome.error}" if outcome.error else ""), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return outcomes
