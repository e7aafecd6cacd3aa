"""ROI exports beside the ImageJ zip: Cellpose ``_cp_outlines.txt`` and GeoJSON for QuPath.

GeoJSON polygons follow the pixel edges, so a polygon's area is its ROI's pixel count, touching
cells share edges (no overlap, no gap) and holes are interior rings. Pixels of one ROI that touch
only at a corner become separate polygons of a MultiPolygon (corner-touching parts are separate
in QuPath too). Coordinates are pixels, x to the right, y down, the image's top-left corner at
(0, 0): what QuPath's GeoJSON import expects.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from cp2_engine.io._cellpose_files import _label_dtype
from cp2_engine.util import atomic_write

__all__ = ["mask_rings", "save_geojson", "save_outlines_txt"]


def _edges(mask: np.ndarray) -> np.ndarray:
    """Directed boundary edges ``(x0, y0, x1, y1)`` of a boolean mask, interior on the left."""
    pad = np.pad(mask, 1)
    inside = pad[1:-1, 1:-1]
    out = []
    # (neighbour offset, edge start (dx, dy), edge end (dx, dy)) relative to the pixel corner
    for (dr, dc), start, end in (
        ((-1, 0), (0, 0), (1, 0)),  # top
        ((1, 0), (1, 1), (0, 1)),  # bottom
        ((0, -1), (0, 1), (0, 0)),  # left
        ((0, 1), (1, 0), (1, 1)),  # right
    ):
        nb = pad[1 + dr : pad.shape[0] - 1 + dr, 1 + dc : pad.shape[1] - 1 + dc]
        r, c = np.nonzero(inside & ~nb)
        out.append(np.stack([c + start[0], r + start[1], c + end[0], r + end[1]], axis=1))
    return np.concatenate(out)


def _trace(edges: np.ndarray) -> list[list[tuple[int, int]]]:
    """Link directed edges into closed rings; at a corner shared by two rings, turn left (the
    interior side), so corner-touching pixels stay apart. Repeated vertices split a ring."""
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for x0, y0, x1, y1 in edges.tolist():
        outgoing[(x0, y0)].append((x1, y1))
    rings = []
    while outgoing:
        start = next(iter(outgoing))
        ring, prev, here = [start], None, start
        while True:
            options = outgoing[here]
            if len(options) == 1 or prev is None:
                nxt = options.pop()
            else:  # left turn: cross((here - prev), (nxt - here)) > 0
                dx, dy = here[0] - prev[0], here[1] - prev[1]
                nxt = max(options, key=lambda p: dx * (p[1] - here[1]) - dy * (p[0] - here[0]))
                options.remove(nxt)
            if not options:
                del outgoing[here]
            if nxt == start:
                break
            prev, here = here, nxt
            ring.append(here)
        rings += _split_repeats(ring)
    return rings


def _split_repeats(ring: list) -> list[list]:
    """Split a ring that passes a vertex twice into simple rings."""
    seen: dict = {}
    stack: list = []
    out = []
    for p in ring:
        if p in seen:
            i = seen[p]
            loop = stack[i:]
            out.append(loop)
            for q in loop[1:]:
                seen.pop(q, None)
            del stack[i + 1 :]
        else:
            seen[p] = len(stack)
            stack.append(p)
    out.append(stack)
    return [r for r in out if len(r) >= 4]


def _simplify(ring: list) -> list:
    """Drop vertices in the middle of straight runs."""
    pts = np.asarray(ring)
    prv, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    turn = (pts[:, 0] - prv[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prv[:, 1]) * (
        nxt[:, 0] - pts[:, 0]
    )
    return pts[turn != 0].tolist()


def _signed_area(ring) -> float:
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


#: unit edge direction (dx, dy) -> offset (dc, dr) of the pixel on its left (the interior)
_LEFT_PIXEL = {(1, 0): (0, 0), (-1, 0): (-1, -1), (0, -1): (0, -1), (0, 1): (-1, 0)}


def _inside_pixels(ring: list) -> list[tuple[int, int]]:
    """``(col, row)`` of the interior pixel left of each unit edge of a traced ring."""
    out = []
    for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1]):
        dc, dr = _LEFT_PIXEL[(x1 - x0, y1 - y0)]
        out.append((x0 + dc, y0 + dr))
    return out


def _rings(mask: np.ndarray) -> list[tuple[int, list, float]]:
    """(4-connected part, traced ring, signed area) of every boundary ring of ``mask``."""
    from scipy import ndimage

    parts, _ = ndimage.label(mask)
    out = []
    for ring in _trace(_edges(mask)):
        c, r = _inside_pixels(ring[:2])[0]
        out.append((int(parts[r, c]), ring, _signed_area(ring)))
    return out


def mask_rings(mask) -> list[list[list[list[int]]]]:
    """Pixel-edge polygons of a boolean mask, GeoJSON style.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` boolean mask.

    Returns
    -------
    list
        One polygon per 4-connected part: ``[exterior, hole, ...]``, each ring a closed list of
        ``[x, y]`` pixel corners (first point repeated last). Exteriors have a positive signed
        area in these numbers and holes a negative one (RFC 7946's right-hand rule; on screen,
        with y down, exteriors look clockwise).

    Examples
    --------
    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True; m[2, 2] = False
    >>> polys = mask_rings(m)
    >>> len(polys), len(polys[0]), polys[0][0]
    (1, 2, [[1, 1], [4, 1], [4, 4], [1, 4], [1, 1]])
    """
    exteriors: dict[int, list] = {}
    holes: dict[int, list] = defaultdict(list)
    for part, ring, area in _rings(np.asarray(mask, dtype=bool)):
        simple = _simplify(ring)
        closed = [*simple, simple[0]]
        if area > 0:
            exteriors[part] = closed
        else:
            holes[part].append(closed)
    return [[exteriors[k], *holes[k]] for k in sorted(exteriors)]


def _check_masks(masks) -> np.ndarray:
    masks = _label_dtype(masks)
    if masks.ndim != 2:
        raise ValueError(f"masks must be (H, W), got shape {masks.shape}")
    return masks


def _mask_boxes(masks: np.ndarray):
    """Yield ``(label, bounding box)`` of every label present, in label order: the one walk
    over the masks of every ROI writer."""
    from scipy import ndimage

    for index, box in enumerate(ndimage.find_objects(masks)):
        if box is not None:
            yield index + 1, box


def save_geojson(path, masks, *, overwrite: bool = False, classification: str | None = None):
    """Save each mask as a GeoJSON Feature that QuPath imports as a detection.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.geojson`` (or ``.json``).
    masks : numpy.ndarray
        ``(H, W)`` integer label image.
    overwrite : bool, optional
        Replace an existing file. Default False.
    classification : str, optional
        QuPath class name given to every detection (default: none).

    Returns
    -------
    pathlib.Path
        The written path: a FeatureCollection, one Feature per label with a Polygon (or
        MultiPolygon) in pixel coordinates and properties ``objectType: "detection"``,
        ``label``, ``name``.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.geojson``/``.json`` or ``masks`` is not 2D.

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.geojson"
    >>> m = np.zeros((6, 6), np.uint16); m[1:3, 1:3] = 1; m[1:3, 3:5] = 2
    >>> fc = json.loads(save_geojson(p, m).read_text())
    >>> [f["properties"]["label"] for f in fc["features"]], fc["features"][0]["geometry"]["type"]
    ([1, 2], 'Polygon')
    """
    path = Path(path)
    if path.suffix.lower() not in (".geojson", ".json"):
        raise ValueError(f"GeoJSON files end in .geojson or .json, got {path.name!r}")
    masks = _check_masks(masks)
    features = []
    for label, box in _mask_boxes(masks):
        y0, x0 = box[0].start, box[1].start
        polys = [
            [[[x + x0, y + y0] for x, y in ring] for ring in poly]
            for poly in mask_rings(masks[box] == label)
        ]
        geometry = (
            {"type": "Polygon", "coordinates": polys[0]}
            if len(polys) == 1
            else {"type": "MultiPolygon", "coordinates": polys}
        )
        props = {"objectType": "detection", "label": label, "name": f"{label:05d}"}
        if classification:
            props["classification"] = {"name": classification}
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def save_outlines_txt(path, masks, *, overwrite: bool = False) -> Path:
    """Save Cellpose's ``_cp_outlines.txt``: one line per mask, ``x0,y0,x1,y1,...``.

    The points are the mask's boundary pixels (integer pixel coordinates, x first) along its
    outer contour, as Cellpose writes them for its ImageJ import macro.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.txt``, e.g. ``<name>_cp_outlines.txt``.
    masks : numpy.ndarray
        ``(H, W)`` integer label image.
    overwrite : bool, optional
        Replace an existing file. Default False.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.txt`` or ``masks`` is not 2D.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a_cp_outlines.txt"
    >>> m = np.zeros((6, 6), np.uint16); m[1:4, 2:4] = 1
    >>> save_outlines_txt(p, m).read_text().splitlines()
    ['2,1,3,1,3,2,3,3,2,3,2,2']
    """
    path = Path(path)
    if path.suffix.lower() != ".txt":
        raise ValueError(f"Cellpose outlines are .txt files, got {path.name!r}")
    masks = _check_masks(masks)
    lines = []
    for label, box in _mask_boxes(masks):
        crop = masks[box] == label
        exterior = max((ring for _, ring, area in _rings(crop) if area > 0), key=len)
        pixels = []
        for p in _inside_pixels(exterior):
            if not pixels or pixels[-1] != p:
                pixels.append(p)
        if len(pixels) > 1 and pixels[0] == pixels[-1]:
            pixels.pop()
        xy = np.asarray(pixels, dtype=np.int64) + np.array([box[1].start, box[0].start])
        lines.append(",".join(str(v) for v in xy.ravel().tolist()))
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
