"""Result rows: one JSON line per trained or evaluated variant.

Benchmark notebooks record what they measured with a :class:`Recorder`::

    rec = records.Recorder("nar_cost", output_dir, profile=profile, seed=seed)
    rec.add(dataset="til", data_kind="real", model="resnet50v2", method="nar",
            setting={"phi": 2}, metrics={"auc": 0.91}, gflops=2.3, params=1.2e6)
    rec.save_figure(fig, "auc_vs_gflops")

Every row also gets the profile, seed, device, library versions and a time
stamp. The results file is rewritten atomically on every ``add``, so it is
always complete and valid JSON lines, even if the notebook dies midway.
Under torchrun every rank records the same rows but only rank 0 writes them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from histolean.data.registry import DATA_KINDS
from histolean.util import atomic, distributed, dryrun



@cache
def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide the numbers (read from metadata: no imports)."""
    out = {"python": platform.python_version()}
    for name in ("histolean", "torch", "tensorflow", "keras", "numpy", "scikit-learn", "openslide-python"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_description() -> str:
    """'cuda:<name>' when torch sees a GPU, else 'cpu:<processor> x<cores>'."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"cpu:{platform.machine()} x{os.cpu_count()}"


def _jsonable(value: Any) -> Any:
    """numpy / torch scalars and arrays -> plain Python; NaN -> None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class Recorder:
    """Collects the result rows and figures of one benchmark run.

    Creating a Recorder starts a fresh results file and removes the benchmark's old
    figures: a re-executed notebook replaces its outputs instead of adding to them.
    In a data-parallel run (torchrun) only rank 0 touches files; every rank keeps ``rows``
    (a notebook reads its own rows from there, not from the file).
    """

    def __init__(self, benchmark: str, output_dir: str | os.PathLike, *, profile: str, seed: int = 0):
        self.benchmark = benchmark
        self.output_dir = Path(output_dir)
        self.profile = profile
        self.seed = int(seed)
        self.rows: list[dict] = []
        self.results_path = self.output_dir / "results" / f"{benchmark}.jsonl"
        self.figures_dir = self.output_dir / "figures"
        self.writes = distributed.is_main()
        if dryrun.active() and not self.output_dir.name.endswith(dryrun.SUFFIX):
            raise ValueError(f"a dry run writes its rows to a folder named *{dryrun.SUFFIX} (outputs/<profile>"
                             f"{dryrun.SUFFIX}), never beside real results; got {self.output_dir}")
        if not self.writes:
            return
        # a fresh run replaces the benchmark's figures too: none of an earlier run may linger
        for old in self.figures_dir.glob(f"{benchmark}__*.png"):
            old.unlink()
        self._flush()

    def add(self, *, dataset: str, data_kind: str, model: str, method: str,
            setting: dict | None = None, metrics: dict | None = None, kind: str = "variant", **fields: Any) -> dict:
        """Record one row. ``data_kind``: "real", "synthetic" (generated data), "user" (a user's folder) or "none";
        ``kind``: what the row is ("variant": one trained/evaluated/costed variant; "claim": see add_claims;
        an experiment may name others, e.g. "baseline", "speed")."""
        if data_kind not in DATA_KINDS:
            raise ValueError(f"data_kind must be one of {DATA_KINDS}, got {data_kind!r}")
        seed = fields.pop("seed", self.seed)  # a row may carry its own run seed
        row = {
            "benchmark": self.benchmark, "kind": kind, "dataset": dataset, "data_kind": data_kind,
            "model": model, "method": method, "setting": setting or {}, "metrics": metrics or {},
            **fields,
            "profile": self.profile, "seed": seed,
            "device": device_description(), "versions": library_versions(),
            **({"world_size": distributed.world_size()} if distributed.world_size() > 1 else {}),
            **({"dry_run": True} if dryrun.active() else {}),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        row = _jsonable(row)
        self.rows.append(row)
        self._flush()
        return row

    def add_claims(self, claims: list) -> list[dict]:
        """Record the notebook's closing claims (``study.claims.Claim``) as rows of kind "claim"; returns them
        (so ``claims.show(rec.add_claims(...))`` displays what was saved). A re-run replaces the claims."""
        self.rows = [r for r in self.rows if r.get("kind") != "claim"]
        out = []
        for c in claims:
            row = _jsonable({"benchmark": self.benchmark, "kind": "claim", "profile": self.profile,
                             **(c.as_row() if hasattr(c, "as_row") else dict(c)),
                             **({"dry_run": True} if dryrun.active() else {})})
            self.rows.append(row)
            out.append(row)
        self._flush()
        return out

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``figures/<benchmark>__<name>.png`` (atomically)."""
        target = self.figures_dir / f"{self.benchmark}__{name}.png"
        if not self.writes:
            return target
        with atomic.atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        return target

    def _flush(self) -> None:
        if self.writes:
            atomic.write_text(self.results_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows))


def row_slot(row: dict) -> str:
    """The dataset slot a row fills (an experiment's ``pcam`` / ``idc`` or ``monuseg`` / ``tnbc``): its ``slot``
    field where a user's folder took the slot (then ``dataset`` is ``folder:PATH``), else its ``dataset``."""
    return row.get("slot") or row["dataset"]


def read_rows(output_dir: str | os.PathLike, benchmark: str | None = None) -> list[dict]:
    """All rows under ``output_dir/results`` (or one benchmark's), in file order.

    A line that is not valid JSON raises an error naming the file and line.
    """
    results = Path(output_dir) / "results"
    files = [results / f"{benchmark}.jsonl"] if benchmark else sorted(results.glob("*.jsonl"))
    rows = []
    for path in files:
        if not path.exists():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a valid result row ({err.msg}); "
                                 f"re-run that benchmark with --force") from None
    return rows
