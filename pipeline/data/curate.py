"""``bmtl dedup``: the duplicate clusters of an image folder or a datalist (``pipeline.data.dedup``) written as
reports, and optionally a curated datalist without them."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pipeline.atomic import write_json_atomic, write_rows_atomic
from pipeline.data.datalist import load_datalist, validate_datalist
from pipeline.data.dedup import scan_duplicates
from pipeline.data.io import IMAGE_EXTENSIONS, DataError

__all__ = ["CURATE_MODES", "run_dedup"]

CURATE_MODES = ("keep-one", "drop-all")
_KNOWN_CLASS_FOLDERS = ("normal", "benign", "malignant")
DUPLICATES_COLUMNS = ("cluster", "path", "class", "ssim_to_first", "kind")
CONFLICTS_COLUMNS = ("cluster", "n_images", "classes", "paths")


@dataclass
class _Entry:
    path: Path  # resolved file to read
    shown: str  # as written in the reports (datalist path, or path relative to the input folder)
    cls: str = ""
    section: str = ""
    item: dict[str, Any] | None = None


def _folder_entries(root: Path) -> list[_Entry]:
    entries = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or "_mask" in p.stem.lower():
            continue
        rel = p.relative_to(root)
        top = rel.parts[0].lower() if len(rel.parts) > 1 else ""
        entries.append(_Entry(p, rel.as_posix(), cls=top if top in _KNOWN_CLASS_FOLDERS else ""))
    return entries


def _datalist_entries(datalist: dict[str, Any], root: Path) -> list[_Entry]:
    classes = datalist["classes"]
    entries = []
    for section in ("training", "test"):
        for item in datalist.get(section, []):
            p = Path(item["image"])
            entries.append(
                _Entry(p if p.is_absolute() else root / p, str(item["image"]), classes[item["cls"]], section, item)
            )
    return entries


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> Path:
    return write_rows_atomic(path, columns, rows)


def _rebase(path: str, old_root: Path, new_root: Path) -> str:
    p = Path(path)
    if p.is_absolute() or old_root.resolve() == new_root.resolve():
        return path
    try:
        return Path(os.path.relpath((old_root / p).resolve(), new_root.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str((old_root / p).resolve())


def _has_patient_id(item: dict[str, Any]) -> bool:
    group = item.get("group")
    return group not in (None, "") and not str(group).startswith("cluster_")


def run_dedup(
    input: str | os.PathLike,
    output: str | os.PathLike | None = None,
    threshold: float | None = None,
    curate: str | None = None,
) -> dict[str, Path]:
    """Report the duplicates of an image folder or a datalist; optionally write a curated datalist.

    Args:
        input: a folder (searched recursively for image files, skipping ``*_mask*`` files; an image under a first-level
            folder named normal/benign/malignant gets that class, as in BUSI's layout) or a ``datalist.json``
            (its ``training`` and ``test`` images, with their classes).
        output: report folder; default: the datalist's folder, or ``<folder>_dedup`` beside an input folder.
        threshold: SSIM threshold for near duplicates (default ``pipeline.data.dedup.DEFAULT_SSIM_THRESHOLD``).
        curate: datalist input only. ``"keep-one"`` keeps the first image of each cluster (members ordered by image
            path); ``"drop-all"`` drops every image of a cluster whose members disagree on class and keeps the first
            of each consistent cluster, as the Curated BUSI data set was made (Aumente-Maestro et al., CMPB 2025).
            Kept items keep their fold; items without a patient id (no group, or a ``cluster_*`` group) get their
            duplicate cluster as group.

    Writes:
        ``duplicates.csv`` (cluster, path, class, ssim_to_first, kind): one row per image in a cluster; ``kind`` is
        ``exact`` when the image has a pixel-identical copy in its cluster, else ``near``; ``ssim_to_first`` is the
        thumbnail SSIM to the cluster's first member. ``conflicts.csv`` (cluster, n_images, classes, paths): clusters
        whose members have different classes. ``unreadable.csv`` (path, problem). With ``curate``:
        ``datalist_curated.json`` (valid per ``validate_datalist``; paths relative to ``output``).

    Returns:
        ``{"duplicates": ..., "conflicts": ..., "unreadable": ...}`` plus ``"datalist"`` when curating.

    Raises:
        ValueError: ``curate`` is not one of ``CURATE_MODES``, or is given with a folder input.
        DataError: the input does not exist, or is a file that is not a valid datalist.
    """
    input = Path(input)
    if curate is not None and curate not in CURATE_MODES:
        raise ValueError(f"curate must be one of {', '.join(CURATE_MODES)} or None, got {curate!r}")
    datalist, entries, out = _entries_and_output(input, output, curate)
    out.mkdir(parents=True, exist_ok=True)

    # members of a cluster are ordered by their shown path, so "first" does not depend on the datalist order
    order = sorted(range(len(entries)), key=lambda k: (entries[k].shown, k))
    entries = [entries[k] for k in order]
    scan = scan_duplicates([e.path for e in entries], threshold=threshold)
    clusters = [sorted(members, key=lambda k: entries[k].shown) for members in scan.clusters]
    clusters.sort(key=lambda m: entries[m[0]].shown)
    dup_rows, conflict_rows, conflicting = _cluster_rows(entries, scan, clusters)
    paths = {
        "duplicates": _write_csv(out / "duplicates.csv", DUPLICATES_COLUMNS, dup_rows),
        "conflicts": _write_csv(out / "conflicts.csv", CONFLICTS_COLUMNS, conflict_rows),
        "unreadable": _write_csv(
            out / "unreadable.csv",
            ("path", "problem"),
            [{"path": entries[i].shown, "problem": problem} for i, problem in scan.unreadable],
        ),
    }
    if curate is None:
        return paths
    assert datalist is not None
    curated, dropped = _curated_datalist(datalist, entries, clusters, conflicting, curate, input.parent, out)
    curated["curation"] = {
        "mode": curate,
        "threshold": scan.threshold,
        "clusters": len(clusters),
        "conflicting_clusters": len(conflicting),
        "dropped": dropped,
        "source": str(input),
    }
    validate_datalist(curated, source="datalist_curated.json")
    paths["datalist"] = out / "datalist_curated.json"
    write_json_atomic(paths["datalist"], curated, default=None)
    return paths


def _entries_and_output(input: Path, output: str | os.PathLike | None,
                        curate: str | None) -> tuple[dict[str, Any] | None, list[Any], Path]:
    """The datalist (None for a folder), the images to scan and the report folder of ``run_dedup``."""
    if input.is_dir():
        if curate is not None:
            raise ValueError(f"curate={curate!r} needs a datalist.json input; {input} is a folder")
        out = Path(output) if output is not None else input.parent / f"{input.name}_dedup"
        return None, _folder_entries(input), out
    if input.is_file():
        datalist = load_datalist(input)
        return datalist, _datalist_entries(datalist, input.parent), Path(output) if output is not None else input.parent
    raise DataError(input, "input not found: give an image folder or a datalist.json")


def _cluster_rows(entries: list[Any], scan: Any,
                  clusters: list[list[int]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    """``duplicates.csv``'s rows (one per image in a cluster), ``conflicts.csv``'s (one per cluster whose members
    disagree on class) and the indices of those clusters."""
    dup_rows, conflict_rows = [], []
    conflicting: set[int] = set()
    for c, members in enumerate(clusters):
        first = members[0]
        for k in members:
            dup_rows.append({"cluster": c, "path": entries[k].shown, "class": entries[k].cls,
                             "ssim_to_first": f"{scan.pair_ssim(first, k):.4f}",
                             "kind": "exact" if scan.has_exact_copy(k, members) else "near"})
        counts = Counter(entries[k].cls for k in members if entries[k].cls)
        if len(counts) > 1:
            conflicting.add(c)
            conflict_rows.append({"cluster": c, "n_images": len(members),
                                  "classes": ";".join(f"{name}:{counts[name]}" for name in sorted(counts)),
                                  "paths": ";".join(entries[k].shown for k in members)})
    return dup_rows, conflict_rows, conflicting


def _curated_datalist(datalist: dict[str, Any], entries: list[Any], clusters: list[list[int]], conflicting: set[int],
                      curate: str, source_dir: Path, out: Path) -> tuple[dict[str, Any], int]:
    """The datalist without the dropped duplicates (``curate`` mode), paths rebased to ``out`` (items without a
    patient id get their duplicate cluster as group), and how many were dropped."""
    drop: set[int] = set()
    cluster_of: dict[int, int] = {}
    for c, members in enumerate(clusters):
        for k in members:
            cluster_of[k] = c
        drop.update(members if (curate == "drop-all" and c in conflicting) else members[1:])
    # singletons continue the cluster numbering, in path order
    next_id = len(clusters)
    for k in range(len(entries)):
        if k not in cluster_of:
            cluster_of[k] = next_id
            next_id += 1
    curated: dict[str, Any] = {key: value for key, value in datalist.items() if key not in ("training", "test")}
    keep_index = {id(e.item): k for k, e in enumerate(entries)}
    for section in ("training", "test"):
        kept = []
        for item in datalist.get(section, []):  # original order
            k = keep_index[id(item)]
            if k in drop:
                continue
            item = dict(item)
            for key in ("image", "label"):
                if item.get(key):
                    item[key] = _rebase(str(item[key]), source_dir, out)
            if not _has_patient_id(item):
                item["group"] = f"cluster_{cluster_of[k]:05d}"
            kept.append(item)
        curated[section] = kept
    return curated, len(drop)
