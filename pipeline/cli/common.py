"""What the ``bmtl`` sub-command modules share: exit codes, ``--override`` parsing, the ``--datalist`` check."""

from __future__ import annotations

from pathlib import Path

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "parse_overrides", "require_datalists"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_overrides(pairs: list[str]) -> list[tuple[str, object]]:
    """``KEY=VALUE`` pairs of ``--override`` with each value read as YAML (``epochs=3`` is the number 3)."""
    import yaml

    parsed = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--override expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        parsed.append((key, yaml.safe_load(value)))
    return parsed


def require_datalists(paths: Path | list[Path] | None) -> None:
    """A ``--datalist`` that does not exist is a usage error (exit 2), named before any work starts.

    Raises:
        FileNotFoundError: naming the path and how to make a datalist.
    """
    for path in [paths] if isinstance(paths, Path) else (paths or []):
        if not path.is_file():
            what = "is a folder, not a datalist.json" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"--datalist {path} {what}: make one with `bmtl prepare` (or `bmtl synth`)")
