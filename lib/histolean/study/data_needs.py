"""The datasets each benchmark reads, checked before a run: what is missing or only a subset, said up front.

A benchmark whose dataset folder is missing falls back to the procedural generator (rows say
``data_kind=synthetic``); one that finds a subset (the shared real-data subsets) runs on it. Either way
the paper's numbers need the complete set, and :func:`report` says, per benchmark, the folder looked
for and how to get it (:func:`histolean.data.registry.how_to_get`).
"""

from __future__ import annotations

from histolean.data import registry, status
from histolean.data.til_task import _FOLDERS as TIL_TASK_FOLDERS   # the TIL task's dataset -> folder

# benchmark -> the dataset folders it reads; til_nar_resrep reads the one its `dataset` parameter names, the
# benchmarks in SLOTS those their parameters name
READS = {
    "data_tour": ("pcam", "idc", "crchistophenotypes", "til", "monuseg", "tnbc", "wsi"),
    "nar_cost": (),
    "streaming_sgd": ("pcam",),
    "til_maps": ("wsi",),
}


# benchmark -> {parameter: the dataset it names by default}: a slot given a user's "folder:PATH" reads that instead
SLOTS = {"resrep": {"dataset": "pcam"}, "monuseg_pruning": {"train_data": "monuseg", "shift_data": "tnbc"},
         "pcam_idc_zoo": {"pcam_data": "pcam", "idc_data": "idc"}}


def _user_folder(value) -> bool:
    return str(value).startswith("folder:")


def reads(benchmark: str, parameters: dict) -> tuple[str, ...]:
    """The shared dataset folders a benchmark reads with these parameters (a user's folder is not one)."""
    if benchmark == "til_nar_resrep":
        dataset = parameters.get("dataset", "crc_windows")
        return () if _user_folder(dataset) else (TIL_TASK_FOLDERS.get(dataset, "crchistophenotypes"),)
    if benchmark in SLOTS:
        return tuple(default for key, default in SLOTS[benchmark].items() if not _user_folder(parameters.get(key)))
    return READS.get(benchmark, ())


def items(st: status.DatasetStatus) -> int:
    """Images where the status counts them (segmentation sets, CRC), else patches (every class of every split)."""
    counts = st.counts.values()
    if any("images" in c for c in counts):
        return sum(c.get("images", 0) for c in counts)
    return sum(n for c in counts if all(k.isdigit() for k in c) for n in c.values())


def _state(st: status.DatasetStatus) -> tuple[str, str] | None:
    """(state, line) for a dataset that is missing or a subset; None when complete or of no defined size."""
    if not st.found:
        return "missing", f"{st.name} missing (looked for {st.looked_for}): {st.how_to_get}"
    full = registry.DATASETS[st.name].full_items
    have = items(st)
    if full is None or have >= full:
        return None
    how = registry.how_to_get(st.name).split(" Without it,")[0]
    return "subset", (f"{st.name} is a subset ({have:,} of {full:,} {_unit(st)}) in {st.path}: the run uses it; "
                      f"the complete set: {how}")


def _unit(st: status.DatasetStatus) -> str:
    return "images" if any("images" in c for c in st.counts.values()) else "patches"


def report(cfg: dict, names: list[str], data_root: str | None = None) -> list[str]:
    """One line per benchmark and dataset that is missing or a subset (empty: every dataset complete)."""
    needed = {b: reads(b, cfg["benchmarks"].get(b, {})) for b in names}
    wanted = {d for ds in needed.values() for d in ds}
    if not wanted:
        return []
    found = {st.name: st for st in status.dataset_status(data_root or None, names=wanted)}
    states = {name: _state(st) for name, st in found.items()}
    lines = [f"{benchmark}: {states[d][1]}" for benchmark, ds in needed.items() for d in ds if states.get(d)]
    if lines:
        lines.insert(0, f"data for profile {cfg['profile']!r}: {len(lines)} dataset need(s) short of the complete "
                        "sets (missing ones fall back to the procedural generator, data_kind=synthetic)")
    return lines
