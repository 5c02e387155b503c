"""Merging grid cells into regions: the outline (with holes) of each 4-connected group of cells.

Shapely is not a dependency, and the cells of a patch grid are squares on one lattice, so the
union is exact and simple: keep the cell sides that border a cell outside the group, chain them
into rings, drop the vertices where the direction does not change. Outer rings run clockwise on
screen (y down), holes the other way; at a vertex where a group touches itself corner to corner
the walk turns so that it stays with the same cell, which keeps every ring simple.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

Ring = list[tuple[int, int]]


def merge_cells(cells: np.ndarray, grid_shape: tuple[int, int]) -> list[dict]:
    """Regions of the grid cells ``cells`` ((n, 2) row, col): per 4-connected group, ``rings`` (the
    outer ring, then any holes; closed lists of (x=col, y=row) lattice points) and ``index`` (the
    positions in ``cells`` of the group's cells). Sorted by the group's first cell in raster order."""
    from scipy import ndimage

    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    rows, cols = grid_shape
    padded = np.zeros((rows + 2, cols + 2), dtype=bool)
    padded[cells[:, 0] + 1, cells[:, 1] + 1] = True
    labels, n = ndimage.label(padded)  # the default structure: 4-connected
    cell_label = labels[cells[:, 0] + 1, cells[:, 1] + 1]
    regions = []
    for k in range(1, n + 1):
        group = labels == k
        rings = [_simplify(r) for r in _rings(_edges(group))]
        outer = [r for r in rings if _area(r) > 0]
        holes = [r for r in rings if _area(r) < 0]
        outer.sort(key=_area, reverse=True)
        regions.append({"rings": outer[:1] + holes, "index": np.flatnonzero(cell_label == k)})
        regions += [{"rings": [r], "index": np.zeros(0, dtype=np.int64)} for r in outer[1:]]  # never expected
    return sorted(regions, key=lambda g: tuple(cells[g["index"][0]]) if len(g["index"]) else (rows, cols))


def _edges(group: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Each cell's sides that face a cell outside the group, clockwise on screen; ``group`` is padded
    by one cell, so (r, c) there is lattice row r - 1, column c - 1."""
    edges = []
    rr, cc = np.nonzero(group)
    for r, c in zip(rr.tolist(), cc.tolist()):
        y, x = r - 1, c - 1
        if not group[r - 1, c]:
            edges.append(((x, y), (x + 1, y)))
        if not group[r, c + 1]:
            edges.append(((x + 1, y), (x + 1, y + 1)))
        if not group[r + 1, c]:
            edges.append(((x + 1, y + 1), (x, y + 1)))
        if not group[r, c - 1]:
            edges.append(((x, y + 1), (x, y)))
    return edges


def _rings(edges) -> list[Ring]:
    out: dict = defaultdict(list)
    for a, b in edges:
        out[a].append(b)
    rings = []
    while out:
        start = min(out)
        ring, prev = [start], start
        cur = _take(out, start, None)
        while cur != start:
            ring.append(cur)
            heading = (cur[0] - prev[0], cur[1] - prev[1])
            prev, cur = cur, _take(out, cur, heading)
        ring.append(start)
        rings.append(ring)
    return rings


def _take(out: dict, at: tuple[int, int], heading) -> tuple[int, int]:
    """The next lattice point from ``at``: at a corner-to-corner touch, the right turn (stay with the cell)."""
    choices = out[at]
    pick = 0
    if heading is not None and len(choices) > 1:
        right = (at[0] - heading[1], at[1] + heading[0])
        pick = choices.index(right) if right in choices else 0
    nxt = choices.pop(pick)
    if not choices:
        del out[at]
    return nxt


def _simplify(ring: Ring) -> Ring:
    """Drop points where the ring goes straight on (the ring stays closed)."""
    pts = ring[:-1]
    keep = []
    for i, p in enumerate(pts):
        a, b = pts[i - 1], pts[(i + 1) % len(pts)]
        if (p[0] - a[0]) * (b[1] - p[1]) != (p[1] - a[1]) * (b[0] - p[0]):
            keep.append(p)
    return keep + keep[:1]


def _area(ring: Ring) -> float:
    """Signed area (shoelace): positive for an outer ring as chained here, negative for a hole."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]))
