"""JSON schemas shipped with the package (no download): ``meta_schema.json`` for the bundles' ``metadata.json``.

MONAI's own ``verify_metadata`` downloads the schema named in the metadata's ``"schema"`` field; this one is local,
covers the fields the breast-mtl bundles use and requires both heads (``seg`` and ``cls``) under
``network_data_format.outputs``. It is usable with MONAI's tool too::

    python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath "$(python -c \
        'import pipeline.schemas as s; print(s.META_SCHEMA)')"
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["META_SCHEMA", "MetadataError", "load_schema", "metadata_errors", "validate_metadata"]

META_SCHEMA = Path(__file__).resolve().with_name("meta_schema.json")


class MetadataError(ValueError):
    """``metadata.json`` does not follow the schema; ``errors`` lists every problem as ``"path: message"``."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{source} does not follow {META_SCHEMA.name}: " + "; ".join(errors))


def load_schema(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The schema at ``path`` (default: the shipped ``meta_schema.json``)."""
    return json.loads(Path(path or META_SCHEMA).read_text(encoding="utf-8"))


def metadata_errors(metadata: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """Every schema violation of ``metadata`` as ``"field.path: message"`` (empty when valid)."""
    import jsonschema

    schema = dict(schema) if schema is not None else load_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = []
    for error in sorted(validator.iter_errors(dict(metadata)), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        errors.append(f"{where}: {error.message}")
    return errors


def validate_metadata(metadata: Mapping[str, Any] | str | os.PathLike,
                      schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a metadata dict (or a ``metadata.json`` path) against the shipped schema.

    Returns:
        the metadata as a dict.

    Raises:
        MetadataError: the metadata does not follow the schema (every problem is listed).
    """
    source = "metadata"
    if not isinstance(metadata, Mapping):
        source = str(metadata)
        metadata = json.loads(Path(metadata).read_text(encoding="utf-8"))
    errors = metadata_errors(metadata, schema)
    if errors:
        raise MetadataError(source, errors)
    return dict(metadata)
