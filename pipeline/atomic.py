"""Atomic file replacement: a reader sees the previous complete file or the new complete file, never a partial one.

Every file a run writes (tables, summaries, configs, reports, figures, masks) goes through :func:`atomic_path`: the
content is written to a temporary file in the target's folder, flushed to disk, and renamed over the target
(``os.replace`` is atomic on POSIX and Windows); the folder entry is flushed too, so even a power loss keeps the old or
the new file. An exception while writing removes the temporary file and leaves the previous file untouched. The
standard library has no such helper (``tempfile`` + ``os.replace`` is the documented recipe); ignite's
``DiskSaver(atomic=True)`` does the same for checkpoints only (``pipeline.handlers.checkpoint`` uses this module).
:func:`atomic_dir` does the same for a whole folder (an exported bundle): built beside the old one, swapped in when
complete.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NAME_MAX",
    "truncate_bytes",
    "atomic_path",
    "atomic_dir",
    "fsync_dir",
    "write_text_atomic",
    "write_json_atomic",
    "write_csv_atomic",
    "write_rows_atomic",
]

# a suffix made of several parts that writers (nibabel) read as one extension
_DOUBLE_SUFFIXES = (".nii.gz",)
# the longest file name (in bytes) of the common file systems (ext4, XFS, Btrfs, APFS; NTFS: 255 UTF-16 units)
NAME_MAX = 255
_TOKEN_BYTES = 8   # the random part of a temporary name (secrets.token_hex(4))


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename) to disk where the platform allows it (POSIX).

    Args:
        folder: the folder whose entries to flush.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _target_suffix(name: str) -> str:
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[-len(suffix):]
    return Path(name).suffix


def truncate_bytes(name: str, limit: int) -> str:
    """The longest start of ``name`` whose file-system encoding takes at most ``limit`` bytes (cut between
    characters, never inside one).

    Args:
        name: a file name (undecodable bytes as surrogate escapes, as ``os.fsdecode`` gives them).
        limit: the most bytes to keep.

    Returns:
        the shortened name (``name`` itself when it fits).
    """
    size = 0
    for k, char in enumerate(name):
        size += len(os.fsencode(char))
        if size > limit:
            return name[:k]
    return name


def _temp_prefix(name: str, suffix: str) -> str:
    """``.<name>.``, the target's name shortened when the temporary name would pass ``NAME_MAX`` bytes (a target
    name near the limit is valid; its temporary sibling, 10-20 bytes longer, would not be)."""
    room = NAME_MAX - _TOKEN_BYTES - len(os.fsencode(suffix)) - 2
    return f".{truncate_bytes(name, room)}."


def _create_temp(folder: Path, prefix: str, suffix: str) -> Path:
    """A new empty file ``folder/<prefix><random><suffix>``.

    Created like ``open(path, "w")`` creates a file (mode 0o666 less the umask), unlike ``tempfile.mkstemp`` (0o600),
    so the renamed file keeps the permissions a plain write would give it.
    """
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"no free temporary file name for {prefix}*{suffix} in {folder}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True, temp_suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, it replaces ``path``.

    The temporary file exists (empty) when the block starts; it is hidden (``.<name>.<random>.tmp<suffix>``, the name
    shortened when that would pass ``NAME_MAX`` bytes) and ends with the target's suffix (``.nii.gz`` included), so
    writers that pick a format by suffix (Pillow, nibabel) still work. An existing target's permission bits are kept.

    Args:
        path: the file to write (its folder is created).
        fsync: flush the file and the folder entry to disk, so that a power loss also keeps the old or the new file.
            Off for bulk per-image outputs (prepared or synthetic images, predicted masks): the rename alone already
            protects them from a killed process, and a flush per file would slow down writing thousands of them.
        temp_suffix: the temporary file's suffix instead of ``.tmp<target suffix>`` (checkpoints use ``.partial`` so
            that leftovers of a killed save can be found and removed).

    Yields:
        the temporary path to write.

    Example::

        with atomic_path(out / "per_image.csv") as tmp:
            frame.to_csv(tmp, index=False)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = temp_suffix if temp_suffix is not None else f".tmp{_target_suffix(target.name)}"
    tmp = _create_temp(target.parent, _temp_prefix(target.name, suffix), suffix)
    try:
        with contextlib.suppress(OSError):  # a plain rewrite keeps the file's mode: so does this
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
        if fsync:
            fsync_dir(target.parent)
    finally:
        # also on KeyboardInterrupt / GeneratorExit: a failed write leaves no temporary file behind
        tmp.unlink(missing_ok=True)


def _create_temp_dir(parent: Path, prefix: str, suffix: str) -> Path:
    """A new empty folder ``parent/<prefix><random><suffix>`` with ``mkdir``'s mode (``mkdtemp`` gives 0o700)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary folder name for {prefix}*{suffix} in {parent}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block ends without an exception, it replaces ``path``.

    Build a whole folder (an exported bundle) in the yielded one (a hidden sibling ``.<name>.<random>.tmpdir``) and
    check it there: ``path`` keeps its previous content until the new folder is complete. The swap renames the
    previous folder aside, renames the new one in and only then deletes the previous one (a folder cannot be renamed
    over a non-empty one); should the second rename fail, the previous folder is put back. An exception in the block
    removes the temporary folder and leaves ``path`` untouched. A process killed during the swap (between two renames)
    leaves the previous folder as a hidden sibling ``.<name>.<random>.old``.

    Args:
        path: the folder to create or replace (its parent is created).
        fsync: flush the parent folder's entries after the swap (files written inside are the caller's to flush,
            e.g. through ``atomic_path``).

    Yields:
        the temporary folder to fill.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _create_temp_dir(target.parent, _temp_prefix(target.name, ".tmpdir"), ".tmpdir")
    try:
        yield staging
        old = None
        if target.exists() or target.is_symlink():
            old = target.with_name(f"{_temp_prefix(target.name, '.old')}{secrets.token_hex(4)}.old")
            os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        if fsync:
            fsync_dir(target.parent)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically.

    Args:
        path: the file to write.
        text: its new content.
        encoding: text encoding.

    Returns:
        ``path`` as a ``Path``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 2, **dumps_kwargs: Any) -> Path:
    """Replace ``path`` with ``data`` as JSON (and a final newline) atomically.

    The JSON is built before the file is touched, so data that cannot be serialised leaves the previous file.

    Args:
        path: the file to write.
        data: what to write.
        indent: JSON indentation.
        dumps_kwargs: more ``json.dumps`` arguments; ``default`` is ``str`` (values JSON cannot hold written as
            text) unless given (``default=None``: such values raise ``TypeError``).

    Returns:
        ``path`` as a ``Path``.
    """
    dumps_kwargs.setdefault("default", str)
    return write_text_atomic(path, json.dumps(data, indent=indent, **dumps_kwargs) + "\n")


def write_csv_atomic(path: str | os.PathLike, frame: Any, **to_csv_kwargs: Any) -> Path:
    """Replace ``path`` with a pandas DataFrame as CSV atomically.

    Args:
        path: the file to write.
        frame: a ``pandas.DataFrame``.
        to_csv_kwargs: ``DataFrame.to_csv`` arguments (``index=False`` unless given).

    Returns:
        ``path`` as a ``Path``.
    """
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)
    return Path(path)


def write_rows_atomic(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Mapping[str, Any]],
                      extrasaction: str = "raise") -> Path:
    """Replace ``path`` with a CSV of dict rows (``csv.DictWriter``, UTF-8, header first) atomically.

    Args:
        path: the file to write.
        columns: the header, in order.
        rows: one mapping per line (missing keys written empty).
        extrasaction: ``"raise"`` or ``"ignore"`` for keys not in ``columns`` (as ``csv.DictWriter``).

    Returns:
        ``path`` as a ``Path``.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction=extrasaction)
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)
