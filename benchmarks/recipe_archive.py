"""Keep the recipe benchmark's finished runs in the repository, small: the files its tables are computed from.

A run trains for 20 CPU-minutes; its folder under ``runs/`` (ignored by git) is lost with the machine. The few small
files a table and a paired comparison are computed from (``done.json``, the bundle's ``run_config.json``, the
training history, the operating threshold, each evaluation's ``summary.json`` and ``per_image.csv``, the split's
``plan.json`` of idle calibrations) are copied into the repository, so that a new checkout re-renders a table
(``benchmarks/recipe.py`` reuses a run whose ``done.json`` and evaluations are present) or pairs two rows
(``benchmarks/paired.py``) without training again:

    python benchmarks/recipe_archive.py save --output runs/recipe --archive benchmarks/results/recipe
    python benchmarks/recipe_archive.py restore --archive benchmarks/results/recipe --output runs/recipe

Only finished runs (``done.json``) are saved. The output folder's absolute path inside the files is written as
``<output>`` (restore writes the new one back), so nothing in the repository names this machine's folders; a
file that still holds an absolute path (a folder outside the output) is refused. Neither direction replaces a file
that differs from the one it would write unless ``--replace`` is given (a run on disk and its archived copy must be
the same run).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.atomic import write_text_atomic  # noqa: E402

PLACEHOLDER = "<output>"
# an absolute POSIX path of two components or more, not the tail of a URL or of a relative path
ABSOLUTE_PATH = re.compile(r"(?<![\w.>/])/(?:[\w.-]+/)+[\w.-]+")
SPLIT_FILES = ("plan.json",)
RUN_FILES = ("done.json", "run_config.json", "history.csv", "models/operating_point.json", "eval_*/summary.json",
             "eval_*/per_image.csv")


def finished_files(output: Path) -> list[Path]:
    """The files kept of ``output`` (a ``benchmarks/recipe.py --output`` folder), relative to it."""
    files = []
    for split in sorted(output.glob("split*")):
        files += [path for name in SPLIT_FILES if (path := split / name).is_file()]
        for run in sorted(split.glob("runs/*")):
            if (run / "done.json").is_file():
                files += sorted(path for pattern in RUN_FILES for path in run.glob(pattern) if path.is_file())
    return [path.relative_to(output) for path in files]


def _copy(files: list[Path], source: Path, target: Path, old: str, new: str, replace: bool) -> tuple[int, int]:
    """Copy ``files`` (relative) from ``source`` to ``target`` with ``old`` written as ``new`` in their text.

    Returns:
        (files written, files already the same).

    Raises:
        FileExistsError: a target file differs and ``replace`` is off (nothing is written).
    """
    texts = {rel: (source / rel).read_text().replace(old, new) for rel in files}
    changed = {rel: text for rel, text in texts.items()
               if not (target / rel).is_file() or (target / rel).read_text() != text}
    clashes = [str(target / rel) for rel in changed if (target / rel).is_file()]
    if clashes and not replace:
        raise FileExistsError(f"{len(clashes)} files differ from what would be written, e.g. {clashes[0]}: another "
                              "run under the same name? Move it away, or pass --replace to overwrite.")
    for rel, text in changed.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target / rel, text)   # never a half-copied done.json that reads as a finished run
    return len(changed), len(files) - len(changed)


def save(output: Path, archive: Path, replace: bool = False) -> tuple[int, int]:
    """Copy the finished runs of ``output`` into ``archive``.

    Raises:
        FileNotFoundError: ``output`` holds no finished run.
        ValueError: a file holds an absolute path outside ``output`` (nothing is written).
    """
    output, archive = output.resolve(), archive.resolve()
    files = finished_files(output)
    if not files:
        raise FileNotFoundError(f"{output}: no finished run (no split*/runs/*/done.json)")
    for rel in files:
        found = ABSOLUTE_PATH.search((output / rel).read_text().replace(str(output), PLACEHOLDER))
        if found:
            raise ValueError(f"{output / rel} holds {found.group()!r}, a path outside {output}: the archive would "
                             "point outside the repository")
    return _copy(files, output, archive, str(output), PLACEHOLDER, replace)


def restore(archive: Path, output: Path, replace: bool = False) -> tuple[int, int]:
    """Copy an archive's runs into ``output`` (created), the placeholder replaced by ``output``'s path.

    Raises:
        FileNotFoundError: ``archive`` holds no finished run.
    """
    output, archive = output.resolve(), archive.resolve()
    files = finished_files(archive)
    if not files:
        raise FileNotFoundError(f"{archive}: no archived run (no split*/runs/*/done.json)")
    return _copy(files, archive, output, PLACEHOLDER, str(output), replace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("--output", type=Path, default=Path("runs/recipe"), help="benchmarks/recipe.py's --output")
    parser.add_argument("--archive", type=Path, default=REPO / "benchmarks" / "results" / "recipe")
    parser.add_argument("--replace", action="store_true", help="overwrite files that differ")
    args = parser.parse_args(argv)
    try:
        if args.action == "save":
            written, same = save(args.output, args.archive, args.replace)
        else:
            written, same = restore(args.archive, args.output, args.replace)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        parser.exit(1, f"recipe_archive.py {args.action}: {error}\n")
    print(f"[recipe_archive] {args.action}: {written} files written, {same} already the same")
    return 0


if __name__ == "__main__":
    sys.exit(main())
