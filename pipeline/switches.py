"""On/off bundle values given on the command line.

``python -m monai.bundle run ... --flip_tta false`` hands the bundle the *string* ``'false'`` (MONAI parses
overrides with Python Fire, which reads Python literals: ``False`` is a bool, ``false`` a string), and a non-empty
string is true in the configs' ``$`` expressions: the switch would silently stay on. The bundles check their
switches first and stop with a message instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["require_bools", "require_choice", "require_fold", "require_fraction", "auto_switch", "TRUE_WORDS",
           "FALSE_WORDS"]

# how a switch is spelled on a command line or in a YAML string
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def require_bools(**switches: Any) -> None:
    """Raise when a switch is not a bool (or 0/1).

    Raises:
        ValueError: naming the switch, the value and the spelling to use.
    """
    for name, value in switches.items():
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            continue
        spelling = "True" if str(value).strip().lower() in TRUE_WORDS else "False"
        raise ValueError(f"--{name} {value!r} is not a switch: write --{name} True or --{name} False "
                         f"(capitalised, e.g. --{name} {spelling})")


def require_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices`` (a bundle value with a fixed set of words, e.g. ``lr_schedule``).

    Raises:
        ValueError: naming the value and the choices.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"--{name} {value!r}: expected one of {', '.join(choices)}")
    return value


def require_fold(value: Any) -> int | str:
    """``--fold``: a fold index (a non-negative integer) or ``"all"`` (train on every fold, nnU-Net's convention).

    Raises:
        ValueError: naming the value and what is accepted.
    """
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"--fold {value!r}: expected a fold index (0, 1, ...) or all")


def require_fraction(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1) (a bundle value that is a fraction, e.g. ``lr_floor``).

    Raises:
        ValueError: naming the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"--{name} {value!r}: expected a number in [0, 1)")
    return float(value)


def auto_switch(name: str, value: Any, auto: bool) -> bool:
    """A switch that may also be ``"auto"``: ``auto`` then decides (e.g. refinement: on when the model has a normal
    class). Booleans, 0/1 and the words true/false/on/off/yes/no (inference configs are also read from Python and
    the ``bmtl`` command line) are accepted.

    Raises:
        ValueError: naming the switch and the accepted values.
    """
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    word = str(value).strip().lower()
    if word == "auto":
        return bool(auto)
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"--{name} {value!r}: expected auto, True or False")
