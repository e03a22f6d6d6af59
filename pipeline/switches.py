"""On/off bundle values given on the command line.

``python -m monai.bundle run ... --flip_tta false`` hands the bundle the *string* ``'false'`` (MONAI parses
overrides with Python Fire, which reads Python literals: ``False`` is a bool, ``false`` a string), and a non-empty
string is true in the configs' ``$`` expressions: the switch would silently stay on. The bundles check their
switches first and stop with a message instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["require_bools"]


def require_bools(**switches: Any) -> None:
    """Raise when a switch is not a bool (or 0/1).

    Raises:
        ValueError: naming the switch, the value and the spelling to use.
    """
    for name, value in switches.items():
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            continue
        spelling = "True" if str(value).strip().lower() in ("true", "1", "yes", "on") else "False"
        raise ValueError(f"--{name} {value!r} is not a switch: write --{name} True or --{name} False "
                         f"(capitalised, e.g. --{name} {spelling})")
