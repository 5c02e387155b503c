"""Memory of one training step, streamed or conventional, with the input where it really lives.

:func:`measure_step` runs :func:`~histolean.methods.streaming.network.training_step` in a fresh process
(``histolean.core.measure.measure_isolated``) and reports two peaks:

* ``step_peak_mib`` - what the step itself adds (activations, gradients, scratch): the
  input, the model and the libraries were resident before it and are not counted;
* ``process_peak_mib`` - the whole process at its peak: libraries, model, optimiser, *the
  input image* and the step. ``input_mib`` is the input's resident size (a float32 tensor:
  12 bytes per pixel; a memory-mapped file read crop by crop: 0) and ``input_share`` its
  part of the process peak.

:func:`project_conventional` extrapolates the conventional step (which grows with the pixels)
to sizes too large to run, from the largest size that ran.

:func:`memory_sweep` is the paper's two sweeps (constant tile, growing image; constant image, growing
tile), the same steps with the input in a memory-mapped file, and one step far beyond what the
conventional step could hold, next to its projection: notebook 04 and ``benchmarks/streaming_memory.py``
both run it.
"""

from __future__ import annotations

from typing import Callable

from histolean.core import measure

MIB = 2 ** 20
STEP = "histolean.methods.streaming:training_step"


def input_mib(image_size: int, input_on: str, batch: int = 1) -> float:
    """Resident size of the step's input: float32 RGB on a device or the CPU; 0 for a memmap (read per crop)."""
    return 0.0 if input_on == "memmap" else batch * 3 * image_size * image_size * 4 / MIB


def measure_step(image_size: int, tile_size: int | None, *, channels, device: str = "cpu", input_on: str = "device",
                 skip_zero_gradient_tiles: bool = False, threads: int | None = None,
                 memory_limit_bytes: int | None = None, timeout_s: float = 900, repeats: int = 1) -> dict:
    """One measured step in a fresh process: status, step_peak_mib, process_peak_mib, input_mib, input_share, time_s."""
    kwargs = {"image_size": image_size, "tile_size": tile_size, "channels": list(channels), "device": device,
              "input_on": input_on, "skip_zero_gradient_tiles": skip_zero_gradient_tiles}
    res = measure.measure_isolated(STEP, kwargs, threads=threads, device=device, memory_limit_bytes=memory_limit_bytes,
                                   timeout_s=timeout_s, repeats=repeats)
    out = {"status": res["status"], "error": res.get("error"), "memory_method": res.get("memory_method"),
           "input_on": input_on, "input_mib": input_mib(image_size, input_on),
           "skip_zero_gradient_tiles": skip_zero_gradient_tiles,
           "watched_peak_rss_mib": res.get("process_peak_rss_mib")}
    if res["status"] == "ok":
        out.update(step_peak_mib=res["peak_mib"], process_peak_mib=res["process_peak_mib"],
                   baseline_mib=res["baseline_mib"], time_s=res["time_s"],
                   input_share=out["input_mib"] / res["process_peak_mib"])
    return out


def project_conventional(measured: dict[int, float], image_size: int) -> dict:
    """Projected peak (MiB) of a conventional step at ``image_size`` from ``measured`` {size: peak MiB}.

    Activations and their gradients scale with the pixels, so the peak of the largest measured
    size is scaled by the pixel ratio (an estimate, labelled as such in the rows).
    """
    if not measured:
        return {"projected_mib": None, "basis": "no conventional step ran"}
    base = max(measured)
    return {"projected_mib": measured[base] * (image_size / base) ** 2,
            "basis": f"{measured[base]:.0f} MiB measured at {base} px x ({image_size}/{base})^2"}


def memory_sweep(*, channels, sizes, tile: int, tiles=(), tiles_image: int | None = None, offdevice_sizes=(),
                 large_size: int = 0, input_on: str = "device", device: str = "cpu", threads: int | None = None,
                 memory_cap_bytes: int, timeout_s: float = 900, large_timeout_s: float | None = None,
                 repeats: int = 1, measure_fn: Callable[..., dict] = measure_step,
                 on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Measure the streaming and conventional steps of the memory experiment; one result per configuration.

    * ``constant_tile``: for each of ``sizes`` (ascending), the streamed step (``tile``-px tiles, input
      ``input_on``) and the conventional one; then each of ``offdevice_sizes`` streamed from a memmap;
    * ``constant_input``: the streamed step on a ``tiles_image`` image for each of ``tiles``;
    * ``large`` (``large_size`` > 0): one streamed step from a memmap, zero-gradient tiles skipped
      (``large_timeout_s``, default ``timeout_s``), and the conventional step *projected* to that size
      (:func:`project_conventional`).

    A conventional step is skipped (status "skipped", with the reason) when its peak projected from the
    largest one that ran exceeds ``memory_cap_bytes`` or a smaller one did not finish; every process is
    also killed at the cap. A configuration that two sweeps share is measured once. Each result is
    :func:`measure_step`'s dict plus ``sweep``, ``method`` ("streaming" | "conventional"),
    ``image_size`` and ``tile_size`` (None: conventional); ``on_result`` sees each as it comes.
    """
    results: list[dict] = []
    measured: dict[tuple, dict] = {}
    conventional: dict[int, float] = {}   # size -> step peak (MiB) of the conventional steps that ran
    stopped = ""                          # why the conventional sweep stopped, once it has

    def emit(sweep: str, size: int, tile_size: int | None, res: dict) -> dict:
        out = {"sweep": sweep, "method": "streaming" if tile_size else "conventional", "image_size": size,
               "tile_size": tile_size, **res}
        results.append(out)
        if on_result is not None:
            on_result(out)
        return out

    def step(sweep: str, size: int, tile_size: int | None, place: str, skip_zero: bool = False,
             limit_s: float = timeout_s) -> dict:
        key = (size, tile_size, place, skip_zero)
        if key not in measured:
            measured[key] = measure_fn(size, tile_size, channels=channels, device=device, input_on=place,
                                       skip_zero_gradient_tiles=skip_zero, threads=threads,
                                       memory_limit_bytes=memory_cap_bytes, timeout_s=limit_s, repeats=repeats)
        return emit(sweep, size, tile_size, measured[key])

    for size in sorted(sizes):
        step("constant_tile", size, tile, input_on)
        projected = project_conventional(conventional, size)["projected_mib"] or 0.0
        if not stopped and projected * MIB > memory_cap_bytes:
            stopped = (f"predicted peak {projected * MIB / 2 ** 30:.1f} GiB > cap "
                       f"{memory_cap_bytes / 2 ** 30:.1f} GiB")
        if stopped:
            emit("constant_tile", size, None, {"status": "skipped", "input_on": "device", "error": stopped})
            continue
        res = step("constant_tile", size, None, "device")
        if res["status"] == "ok":
            conventional[size] = res["step_peak_mib"]
        else:
            stopped = f"a smaller conventional step did not finish ({res['status']} at {size} px)"
    for tile_size in sorted(tiles):
        step("constant_input", tiles_image, tile_size, input_on)
    for size in sorted(offdevice_sizes):
        step("constant_tile", size, tile, "memmap")
    if large_size:
        step("large", large_size, tile, "memmap", skip_zero=True,
             limit_s=timeout_s if large_timeout_s is None else large_timeout_s)
        emit("large", large_size, None, {"status": "projected", "input_on": "device",
                                         "input_mib": input_mib(large_size, "device"),
                                         **project_conventional(conventional, large_size)})
    return results
