"""The study runner: profiles, papermill execution, resume, and the run manifest.

``run("default")`` executes every benchmark notebook named in
``params/default.yaml`` into ``outputs/default/``::

    outputs/<profile>/notebooks/<benchmark>.ipynb   executed copy (with outputs)
    outputs/<profile>/results/<benchmark>.jsonl     result rows (histolean.study.records)
    outputs/<profile>/figures/<benchmark>__*.png    figures
    outputs/<profile>/runs/<benchmark>.json         manifest: status, fingerprint, timing, error

A benchmark is *complete* when its manifest says ``ok``, its fingerprint
(parameters + notebook code + library code) is unchanged, and its executed
notebook and results file exist. Complete benchmarks are skipped on re-run;
the manifest is deleted before a benchmark starts, so an interrupted run is
never mistaken for a finished one.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from histolean.util import atomic, dryrun
from histolean.study import data_needs, dry_run as dry_run_table, records, validate
from histolean.util.paths import notebook_path, project_root

PROFILES = ("smoke", "default", "paper")


def load_profile(profile: str, root: str | os.PathLike | None = None) -> dict:
    """Read ``params/<profile>.yaml``; every benchmark gets a dict of parameters."""
    root = project_root(root)
    path = root / "params" / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "params").glob("*.yaml"))
        raise FileNotFoundError(f"profile {profile!r} not found: {path} does not exist (profiles: {known})")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    benchmarks = cfg.get("benchmarks") or {}
    if not isinstance(benchmarks, dict):
        raise ValueError(f"{path}: 'benchmarks' must map benchmark names to parameter dicts")
    cfg["benchmarks"] = {name: dict(p or {}) for name, p in benchmarks.items()}
    cfg.setdefault("seed", 0)
    cfg.setdefault("cell_timeout_s", 1800)  # papermill stops a notebook when one cell runs longer
    cfg["profile"] = profile
    return cfg


def apply_overrides(cfg: dict, overrides: list[str] | None) -> dict:
    """``cfg`` with ``BENCHMARK.KEY=VALUE`` settings replaced (VALUE read as YAML: ``3``, ``[b2, b6]``,
    ``{resnet50v2: {base_input: 240}}``), as ``histolean run --set`` gives them. The result goes
    through the same profile validation as the file, so a bad value still names its key."""
    cfg = {**cfg, "benchmarks": {name: dict(p) for name, p in cfg["benchmarks"].items()}}
    for text in overrides or []:
        target, sep, value = text.partition("=")
        benchmark, dot, key = target.strip().partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"--set {text!r}: expected BENCHMARK.KEY=VALUE, e.g. pcam_idc_zoo.epochs=2")
        if benchmark not in cfg["benchmarks"]:
            raise ValueError(f"--set {text!r}: no benchmark {benchmark!r} in profile {cfg['profile']!r} "
                             f"(benchmarks: {', '.join(cfg['benchmarks'])})")
        try:
            cfg["benchmarks"][benchmark][key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {text!r}: the value is not valid YAML ({' '.join(str(err).split())})") from None
    return cfg


def output_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    return project_root(root) / "outputs" / profile


def _sha256(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
        h.update(b"\0")
    return h.hexdigest()


def notebook_code(path: Path) -> str:
    """The code of a notebook, without outputs or metadata (what decides its results)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n# ---\n".join("".join(c.get("source", "")) for c in nb.get("cells", []) if c.get("cell_type") == "code")


# The runner, the report and the command line shape no result: editing them keeps results current.
_NOT_IN_RESULTS = {"study/runner.py", "study/report.py", "cli.py"}


def library_fingerprint() -> str:
    """Hash of the library's own source: a change in the code re-runs the study.

    ``$HISTOLEAN_LIBRARY_FINGERPRINT`` pins it, to keep finished results across a
    library edit known not to change them (a docstring, a plot colour).
    """
    if os.environ.get("HISTOLEAN_LIBRARY_FINGERPRINT"):
        return os.environ["HISTOLEAN_LIBRARY_FINGERPRINT"]
    lib = Path(__file__).resolve().parents[1]  # the histolean package
    files = sorted(p for p in lib.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
                   and p.relative_to(lib).as_posix() not in _NOT_IN_RESULTS)
    return _sha256(*(p.relative_to(lib).as_posix().encode() + p.read_bytes() for p in files))


def fingerprint(notebook: Path, parameters: dict) -> str:
    return _sha256(json.dumps(parameters, sort_keys=True, default=str).encode(),
                   notebook_code(notebook).encode(), library_fingerprint().encode())


def benchmark_parameters(benchmark: str, cfg: dict, out: Path, data_root: str | None = None) -> dict:
    """What the runner injects into a benchmark notebook (and fingerprints)."""
    return {
        "profile": cfg["profile"], "output_dir": str(out), "seed": int(cfg["seed"]),
        "data_root": data_root if data_root is not None else os.environ.get("HISTOLEAN_DATA", ""),
        **cfg["benchmarks"][benchmark],
    }


def status(benchmark: str, cfg: dict, root: Path, out: Path, data_root: str | None = None) -> str:
    """'ok' (finished, and parameters and code unchanged since), 'stale' (finished with other
    parameters or code), 'failed', or 'missing' (never finished)."""
    manifest = read_manifest(out, benchmark) or {}
    state = manifest.get("status", "missing")
    notebook = notebook_path(root, benchmark)
    if state == "ok" and (not notebook.exists() or
                          manifest.get("fingerprint") != fingerprint(notebook, benchmark_parameters(
                              benchmark, cfg, out, data_root))):
        return "stale"
    return state


@dataclass
class Outcome:
    benchmark: str
    status: str          # ok | failed | skipped (already complete)
    seconds: float = 0.0
    error: str | None = None


def manifest_path(out: Path, benchmark: str) -> Path:
    return out / "runs" / f"{benchmark}.json"


def read_manifest(out: Path, benchmark: str) -> dict | None:
    path = manifest_path(out, benchmark)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None  # a damaged manifest means "not complete": the benchmark runs again


def is_complete(out: Path, benchmark: str, fp: str) -> bool:
    m = read_manifest(out, benchmark)
    if not m or m.get("status") != "ok" or m.get("fingerprint") != fp:
        return False
    if not (out / "notebooks" / f"{benchmark}.ipynb").exists():
        return False
    try:
        records.read_rows(out, benchmark)
    except ValueError:
        return False
    return (out / "results" / f"{benchmark}.jsonl").exists()


def _kernel_name() -> str:
    """The project's 'histolean' kernel when registered (make does it), else python3."""
    from jupyter_client.kernelspec import find_kernel_specs

    return "histolean" if "histolean" in find_kernel_specs() else "python3"


def _local_kernel(socket_dir: str) -> dict:
    """Talk to the kernel over a local (unix) socket: over TCP every kernel start logs "Kernel is running
    over TCP without encryption", once per notebook in the study's output. The sockets live in a folder of
    this run's own: kernels started at the same moment (torchrun ranks, Dask workers) would otherwise pick
    the same socket names in the notebook's folder. Windows has TCP only."""
    if os.name != "posix":
        return {}
    from traitlets.config import Config

    return {"config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(socket_dir, "kernel")}})}


def _error_text(err: Exception) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        cell = getattr(err, "exec_count", None)
        return f"{ename}: {evalue}" + (f" (cell [{cell}])" if cell else "")
    return f"{type(err).__name__}: {err}"


def run_benchmark(benchmark: str, cfg: dict, root: Path, out: Path, force: bool = False,
                  data_root: str | None = None) -> Outcome:
    """Execute one benchmark notebook with papermill; write its manifest."""
    import papermill as pm

    notebook = notebook_path(root, benchmark)
    if not notebook.exists():
        return _record_failure(out, benchmark, "", 0.0,
                               f"notebook {notebook} does not exist (listed in params/{cfg['profile']}.yaml)")
    parameters = benchmark_parameters(benchmark, cfg, out, data_root)
    try:
        fp = fingerprint(notebook, parameters)
    except ValueError as err:  # not JSON: recorded, the study goes on with the next benchmark
        return _record_failure(out, benchmark, "", 0.0, f"notebook {notebook} is not a readable notebook ({err})")
    if not force and is_complete(out, benchmark, fp):
        return Outcome(benchmark, "skipped")

    manifest_path(out, benchmark).unlink(missing_ok=True)
    executed = out / "notebooks" / f"{benchmark}.ipynb"
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    error = None
    with atomic.atomic_path(executed) as tmp, tempfile.TemporaryDirectory(prefix="histolean-kernel-") as sockets:
        try:
            pm.execute_notebook(str(notebook), str(tmp), parameters=parameters, kernel_name=_kernel_name(),
                                cwd=str(notebook.parent), progress_bar=False,
                                execution_timeout=int(cfg["cell_timeout_s"]), **_local_kernel(sockets))
        except Exception as err:  # recorded, the study goes on with the next benchmark
            error = _error_text(err)
            if not tmp.exists() or tmp.stat().st_size == 0:
                tmp.write_text(notebook.read_text(encoding="utf-8"), encoding="utf-8")
    seconds = time.perf_counter() - t0
    if error:
        return _record_failure(out, benchmark, fp, seconds, error, started)
    _write_manifest(out, benchmark, {"status": "ok", "fingerprint": fp, "parameters": parameters,
                                     "started": started.isoformat(timespec="seconds"), "seconds": round(seconds, 2)})
    return Outcome(benchmark, "ok", seconds)


def _write_manifest(out: Path, benchmark: str, manifest: dict) -> None:
    atomic.write_text(manifest_path(out, benchmark), json.dumps({"benchmark": benchmark, **manifest}, indent=2))


def _record_failure(out, benchmark, fp, seconds, error, started=None) -> Outcome:
    _write_manifest(out, benchmark, {"status": "failed", "fingerprint": fp, "error": error,
                                     "started": started.isoformat(timespec="seconds") if started else None,
                                     "seconds": round(seconds, 2)})
    return Outcome(benchmark, "failed", seconds, error)


def run(profile: str = "default", only: list[str] | None = None, force: bool = False,
        root: str | os.PathLike | None = None, data_root: str | None = None,
        progress: bool = True, out: str | os.PathLike | None = None, scheduler: str | None = None,
        dry_run: bool = False, overrides: list[str] | None = None) -> list[Outcome]:
    """Run the study's benchmarks for ``profile`` (all, or ``only`` these) into
    ``out`` (default ``outputs/<profile>``). With ``scheduler`` (or a ``scheduler:``
    key in the profile), each benchmark runs as a task on that Dask cluster.
    ``overrides``: ``BENCHMARK.KEY=VALUE`` settings over the profile's (:func:`apply_overrides`);
    a benchmark run with other settings is stale, so it runs again.

    ``dry_run``: every notebook with the profile's settings but its loops cut to their first step
    (:mod:`histolean.util.dryrun`), into ``outputs/<profile>-dry-run``, always re-run. The
    closing table (:func:`histolean.study.dry_run.table`) goes to ``dry_run.md`` there."""
    from tqdm.auto import tqdm

    root = project_root(root)
    cfg = apply_overrides(load_profile(profile, root), overrides)
    names = list(cfg["benchmarks"])
    if only:
        unknown = [n for n in only if n not in cfg["benchmarks"]]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown} for profile {profile!r}; known: {names}")
        names = [n for n in names if n in only]
    # the notebooks' reading order (til_maps uses the models til_nar_resrep trains); unnumbered ones keep the profile's
    names.sort(key=lambda n: notebook_path(root, n).name[:2] if notebook_path(root, n).name[:2].isdigit() else "99")
    if dry_run and (scheduler or cfg.get("scheduler")):
        raise ValueError("--dry-run runs here, on this machine: drop --scheduler (and the profile's scheduler key)")
    out = Path(out) if out is not None else output_dir(profile + (dryrun.SUFFIX if dry_run else ""), root)
    # before anything runs: a typo or a bad value in a profile must not cost a half-finished study
    validate.check_profile({**cfg, "benchmarks": {n: benchmark_parameters(n, cfg, out, data_root) for n in names}},
                           root)
    if progress:   # missing datasets and subsets, said before hours of training on them
        for line in data_needs.report(cfg, names, data_root):
            print(line)
    outcomes = []
    if scheduler or cfg.get("scheduler"):   # each notebook as one task on a Dask cluster
        return _run_on_cluster(names, cfg, root, out, scheduler or cfg["scheduler"], force, data_root, progress)
    bar = tqdm(names, desc=f"study [{profile}]", unit="notebook", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        if dry_run:
            outcome = _dry_run_benchmark(name, cfg, root, out, data_root)
        else:
            outcome = run_benchmark(name, cfg, root, out, force=force, data_root=data_root)
        outcomes.append(outcome)
        bar.write(f"{name}: {outcome.status}" + (f" in {outcome.seconds:.0f}s" if outcome.seconds else "")
                  + (f" -- {outcome.error}" if outcome.error else ""))
    if dry_run:
        text = dry_run_table.table(out, outcomes)
        atomic.write_text(out / "dry_run.md", text)
        if progress:
            print(text)
    return outcomes


def _dry_run_benchmark(name, cfg, root, out, data_root) -> Outcome:
    """One notebook with its loops cut to their first step, measured into its own log; from nothing: the
    benchmark's folders of an earlier dry run (models/<name>, cache/<name>, ... and <name>/) are removed
    first, or its notebook would resume finished trainings and measure none of them. Only in a dry run's
    own folder (``...-dry-run``): never in a folder of real results passed as ``out``."""
    log = dry_run_table.log_path(out, name)
    log.unlink(missing_ok=True)
    if Path(out).name.endswith(dryrun.SUFFIX):
        for folder in [*Path(out).glob(f"*/{name}"), Path(out) / name]:
            if folder.is_dir():
                shutil.rmtree(folder)
    with dryrun.enabled(log):
        return run_benchmark(name, cfg, root, out, force=True, data_root=data_root)


def _run_on_cluster(names, cfg, root, out, scheduler, force, data_root, progress) -> list[Outcome]:
    """Each benchmark as one Dask task running ``run_benchmark`` on a worker: the same resume,
    atomic writes and manifests as locally, into the same ``out`` (a path the workers share)."""
    from tqdm.auto import tqdm

    from histolean.util import cluster

    # decided here, not from each worker's environment: every worker runs the same parameters
    data_root = data_root if data_root is not None else os.environ.get("HISTOLEAN_DATA", "")
    task = functools.partial(run_benchmark, cfg=cfg, root=Path(root).resolve(), out=out.resolve(), force=force,
                             data_root=data_root)
    with cluster.client(scheduler) as dask:   # connect first: an unreachable scheduler fails before any bar
        bar = tqdm(total=len(names), desc=f"study [{cfg['profile']}] on {scheduler}", unit="notebook",
                   disable=not progress)
        outcomes: dict[str, Outcome] = {}

        def finished(name, outcome):
            if not isinstance(outcome, Outcome):   # the task itself failed (a lost worker, say)
                outcome = _record_failure(out, name, "", 0.0, f"the Dask task failed: {_error_text(outcome)}")
            bar.update(1)
            bar.write(f"{name}: {outcome.status}" + (f" in {outcome.seconds:.0f}s" if outcome.seconds else "")
                      + (f" -- {outcome.error}" if outcome.error else ""))
            outcomes[name] = outcome

        cluster.map_variants(task, names, dask, return_exceptions=True, on_done=finished)
        bar.close()
    return [outcomes[name] for name in names]
