"""What the ``bmtl`` sub-command modules share: exit codes and ``--override`` parsing."""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "parse_overrides"]

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
