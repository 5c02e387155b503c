"""Fanning independent work out over a Dask cluster (dask.distributed), or a plain loop without one.

The study uses it to send each benchmark notebook to a worker as one task
(``histolean run --scheduler tcp://head:8786``); a notebook can use it for its
own independent variants (models, seeds, settings)::

    results = cluster.map_variants(train_one, variants)   # on $HISTOLEAN_SCHEDULER if set, else a loop

``HISTOLEAN_SCHEDULER=tcp://head:8786 histolean run --profile paper`` then runs the
notebooks here, one at a time, and their variants on the cluster; the address
is no parameter, so it changes no fingerprint and no result.

On a cluster, ``fn`` and the items travel to the workers by cloudpickle: a
function defined in a notebook cell works, as long as the modules it uses are
importable there. The workers must run the same code and see the same files (a
shared file system) as the caller.
Caveat: a task that waits on tasks of its own (a notebook mapping its variants
while it occupies a worker) needs workers to spare, or it waits for ever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

CONNECT_TIMEOUT_S = 30
SCHEDULER_ENV = "HISTOLEAN_SCHEDULER"   # where map_variants sends tasks when no scheduler is named


@contextlib.contextmanager
def client(scheduler, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator:
    """A ``distributed.Client`` for ``scheduler``: an address ('tcp://host:8786'), the JSON file that
    ``dask scheduler --scheduler-file`` writes, or a Client (used as is, left open)."""
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if not isinstance(scheduler, (str, os.PathLike)) or not str(scheduler).strip():
        raise ValueError(f"scheduler must be a Dask scheduler address like 'tcp://host:8786' or a scheduler "
                         f"file, got {scheduler!r}")
    target = str(scheduler).strip()
    as_file = target.endswith(".json")
    if as_file and not Path(target).is_file():
        raise FileNotFoundError(f"Dask scheduler file {target} does not exist; start the scheduler with "
                                f"`dask scheduler --scheduler-file {target}` on a shared path")
    try:
        connected = (Client(scheduler_file=target, timeout=timeout_s) if as_file
                     else Client(target, timeout=timeout_s))
    except (OSError, TimeoutError) as err:
        raise ConnectionError(f"cannot reach the Dask scheduler at {target} within {timeout_s:g} s ({err}); "
                              f"start one with `dask scheduler` and workers with `dask worker {target}`") from None
    try:
        yield connected
    finally:
        connected.close()


def check_reachable(scheduler, timeout_s: float = 3.0) -> None:
    """Raise ``ConnectionError`` (one line, naming it) unless the scheduler's TCP port answers within
    ``timeout_s``: a quick look before any work, instead of a client's long wait and traceback.
    A Client, or an address of another protocol (inproc://, ucx://), is taken as it is."""
    import json
    import socket
    from urllib.parse import urlsplit

    if not isinstance(scheduler, (str, os.PathLike)):
        return
    target = str(scheduler).strip()
    if target.endswith(".json"):
        try:
            target = json.loads(Path(target).read_text())["address"]
        except FileNotFoundError:
            raise FileNotFoundError(f"Dask scheduler file {scheduler} does not exist; start the scheduler with "
                                    f"`dask scheduler --scheduler-file {scheduler}` on a shared path") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"Dask scheduler file {scheduler} cannot be read ({type(err).__name__}: {err})") from None
    parts = urlsplit(target if "://" in target else f"tcp://{target}")
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port or 8786
    except ValueError as err:  # a port that is not a number
        raise ValueError(f"scheduler address {target!r} is not host:port ({err})") from None
    if not host:
        raise ValueError(f"scheduler address {target!r} names no host; expected tcp://host:8786")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"cannot reach the Dask scheduler at {target} within {timeout_s:g} s "
                              f"({err.strerror or type(err).__name__}); start one with `dask scheduler` and "
                              f"workers with `dask worker {target}`") from None


_CANCELLED = (concurrent.futures.CancelledError, asyncio.CancelledError)


def map_variants(fn: Callable, items: Iterable, scheduler=None, *, return_exceptions: bool = False,
                 on_done: Callable | None = None) -> list:
    """``[fn(item) for item in items]``: a local loop, or one Dask task per item on ``scheduler``
    (an address, a scheduler file or a Client; None: ``$HISTOLEAN_SCHEDULER`` when set).

    Results come back in the order of ``items``. ``on_done(item, result)`` runs as each one
    finishes (in finishing order on a cluster), e.g. to record a row at once. An exception
    in ``fn`` is raised here (the unfinished tasks are cancelled), unless ``return_exceptions``:
    then it takes that item's place in the list and the others go on.
    """
    items = list(items)
    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if scheduler is None:
        results = []
        for item in items:
            try:
                result = fn(item)
            except Exception as err:
                if not return_exceptions:
                    raise
                result = err
            if on_done is not None:
                on_done(item, result)
            results.append(result)
        return results

    from distributed import as_completed

    with client(scheduler) as dask:
        futures = [dask.submit(fn, item, pure=False) for item in items]   # pure=False: every item runs
        position = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(items)
        try:
            for future in as_completed(futures):
                i = position[future.key]
                try:
                    result = future.result()
                except (Exception, *_CANCELLED) as err:   # a lost worker or a cancelled task counts as failed
                    if not return_exceptions:
                        raise
                    result = err
                results[i] = result
                if on_done is not None:
                    on_done(items[i], result)
        finally:
            dask.cancel([f for f in futures if not f.done()])
    return results


def map_processes(fn: Callable, items: Iterable, workers: int = 2, *, on_done: Callable | None = None) -> list:
    """``[fn(item) for item in items]`` on ``workers`` fresh processes of this machine (spawned, not forked:
    safe beside OpenVINO or TensorFlow threads), in the order of ``items``; ``on_done(item, result)`` as each
    finishes. The first exception is raised here and the items not yet started are cancelled.

    For CPU-bound torch work on one machine this is the lighter choice: a bf16 ResNet50V2 training epoch ran
    1.5x slower in a Dask worker process than in a plain one (7.7 s against 12.1 s, two at a time, 2 cores).
    """
    import multiprocessing

    items = list(items)
    results: list = [None] * len(items)
    with concurrent.futures.ProcessPoolExecutor(max(1, int(workers)),
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_done is not None:
                    on_done(items[i], results[i])
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1):
    """A Dask LocalCluster on this machine: ``n_workers`` worker processes of ``threads_per_worker`` threads,
    no dashboard, quiet logs. Close it when done (it is a context manager); several calls can share it
    through ``client(cluster.scheduler_address)`` or ``distributed.Client(cluster)``."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                        dashboard_address=None, silence_logs=40)
