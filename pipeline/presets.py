"""Presets: ``configs/<name>.yaml``, one MONAI config fragment per network, shared by the bundles.

A preset overrides the bundle's network and recipe keys (``network_name``, ``network_kwargs``, ``image_size``,
``batch_size``, ``learning_rate``, ``seg_loss``/``cls_loss`` as ``_target_`` entries, ...; see ``configs/README.md``)
and is merged as one more ``--config_file`` after the bundle's own files (``pipeline.workflows.bundle_command`` does it
for ``bmtl train --preset NAME``). Every value stays overridable on its own from the command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.resources import resource_dir

__all__ = ["REQUIRED_KEYS", "available_presets", "fragment_path", "load_preset", "preset_name",
           "preset_path", "require_merged"]

REQUIRED_KEYS = ("preset", "preset_merged", "network_name", "network_kwargs", "image_size", "batch_size")
# the nested layout of the presets before they were config fragments (2026-12-02): bundles exported earlier carry
# one as configs/preset.yaml and read it with load_preset from their own (copied) configs
_LEGACY_KEYS = ("network_name", "network_kwargs", "image_size", "batch_size", "optimizer", "loss")


def _dirs() -> list[Path]:
    """BMTL_PRESETS's folders (os.pathsep separated), then the project's configs/.

    Looked up on use, not on import: the code an MLflow model or an exported bundle carries imports this module (for
    ``preset_name``) without a configs/ folder beside it.
    """
    extra = [Path(p) for p in os.environ.get("BMTL_PRESETS", "").split(os.pathsep) if p]
    return [*extra, resource_dir("configs")]


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


def preset_name(preset: Any) -> str:
    """The name a run records for ``preset``: the stem of a preset file's path (runs of before 2026-12-02 recorded the
    path they were given), else the name itself."""
    text = str(preset)
    return Path(text).stem if text.endswith((".yaml", ".yml")) else text


def fragment_path(name: str | os.PathLike) -> Path:
    """The resolved file of preset ``name``, checked to be a config fragment (what a bundle run merges).

    Raises:
        KeyError: unknown preset.
        ValueError: a malformed preset, or one in the nested layout of before 2026-12-02 (the message says what to do).
    """
    path = preset_path(name).resolve()
    if "preset_merged" not in load_preset(path):   # the nested layout (load_preset checks the fragments' keys)
        raise ValueError(f"{path}: a preset in the nested layout of before 2026-12-02 (optimizer:, loss:); "
                         "write it as a config fragment like those in configs/ (configs/README.md)")
    return path


def load_preset(name: str | os.PathLike) -> dict[str, Any]:
    """The values of a preset as written in its file (``$`` expressions and ``@`` references unresolved), checked.

    A file in the nested layout of bundles exported before presets were config fragments is read as such (with its
    defaults filled in), so that those bundles keep loading.

    Raises:
        KeyError: unknown preset.
        ValueError: the file is not a mapping, lacks a required key, or its ``preset`` and ``preset_merged`` differ
            (the message names the file).
    """
    path = preset_path(name)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a YAML mapping")
    if "optimizer" in data and "loss" in data:   # the nested layout
        return _legacy_preset(path, data)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: preset lacks key(s) {', '.join(missing)} (see configs/README.md)")
    if data["preset"] != data["preset_merged"]:
        raise ValueError(f"{path}: `preset` ({data['preset']!r}) and `preset_merged` ({data['preset_merged']!r}) "
                         "must both be the preset's name")
    return data


def _legacy_preset(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _LEGACY_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: preset lacks key(s) {', '.join(missing)}")
    data.setdefault("extra_input_channels", [])
    data.setdefault("circle_training", False)
    data.setdefault("cpu_bf16", False)
    data["loss"].setdefault("aux_weights", {})
    return data


def require_merged(preset: str, merged: str) -> str:
    """``preset`` when its config fragment is the one merged (``preset_merged``); a bundle's workflows check it first.

    ``--preset NAME`` alone only renames the run: the network and the recipe come from the merged files.

    Raises:
        ValueError: ``preset`` names another preset than the one merged; the message says which file to add.
    """
    if str(preset) != str(merged):
        try:
            where = str(preset_path(preset))
        except KeyError:
            where = f"configs/{preset}.yaml"
        raise ValueError(
            f"preset: {preset!r} was given, but the merged configs hold preset {merged!r}. A preset is a config "
            f"fragment: merge it as one more --config_file ({where}) instead of overriding --preset, or use "
            f"`bmtl train --preset {preset}`, which does it")
    return str(preset)
