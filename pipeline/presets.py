"""Experiment presets: ``configs/<name>.yaml``, one per network, shared by the bundles.

A preset holds the network name and its keyword arguments, the training size, batch size, optimizer and loss
settings (see any file in ``configs/``). Bundles pick one with a single override, ``--preset NAME``; every value
stays overridable on its own from the command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.resources import resource_dir

__all__ = ["PRESET_DIRS", "REQUIRED_KEYS", "available_presets", "load_preset", "preset_path"]

# The repository's configs/ (editable installs and checkouts); BMTL_PRESETS adds folders (os.pathsep separated).
PRESET_DIRS = [resource_dir("configs")]
REQUIRED_KEYS = ("network_name", "network_kwargs", "image_size", "batch_size", "optimizer", "loss")


def _dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("BMTL_PRESETS", "").split(os.pathsep) if p]
    return [*extra, *PRESET_DIRS]


def available_presets() -> list[str]:
    """Names of the presets found in the preset folders."""
    return sorted({p.stem for d in _dirs() if d.is_dir() for p in d.glob("*.yaml")})


def preset_path(name: str | os.PathLike) -> Path:
    """The file of preset ``name`` (a name from ``available_presets()`` or a path to a YAML file).

    Raises:
        KeyError: unknown preset; the message lists the available ones.
    """
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    for d in _dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            return path
    raise KeyError(f"unknown preset {str(name)!r}; available presets: {', '.join(available_presets())}")


def load_preset(name: str | os.PathLike) -> dict[str, Any]:
    """Read and check a preset.

    Raises:
        KeyError: unknown preset.
        ValueError: the file is not a mapping or lacks a required key (the message names the file and the key).
    """
    path = preset_path(name)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a YAML mapping")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: preset lacks key(s) {', '.join(missing)}")
    data.setdefault("extra_input_channels", [])
    data.setdefault("circle_training", False)
    data.setdefault("cpu_bf16", False)   # bfloat16 training forward on an AMX CPU, where it was measured faster
    data["loss"].setdefault("aux_weights", {})
    return data
