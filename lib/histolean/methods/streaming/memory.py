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
"""

from __future__ import annotations

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
           "skip_zero_gradient_tiles": skip_zero_gradient_tiles, "watched_peak_rss_mib": res.get("process_peak_rss_mib")}
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
