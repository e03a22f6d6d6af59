"""``bmtl verify``: a bundle (source or exported) checked against its metadata, head by head."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.bundle_folder import MODEL_FILES
from pipeline.deploy import bundle_parser, load_state_dict
from pipeline.export import OnnxModel, load_torchscript
from pipeline.keys import Head

__all__ = ["CheckRow", "format_checks", "verify_bundle"]


@dataclass
class CheckRow:
    """One line of ``bmtl verify``'s table."""

    check: str
    expected: str
    got: str
    ok: bool
    detail: str = field(default="")


def format_checks(rows: Sequence[CheckRow]) -> str:
    """A Markdown table of the checks with a PASS/FAIL verdict line."""
    lines = ["| check | expected | got | result |", "| --- | --- | --- | --- |"]
    for r in rows:
        got = r.got + (f" ({r.detail})" if r.detail else "")
        lines.append(f"| {r.check} | {r.expected} | {got} | {'pass' if r.ok else 'FAIL'} |")
    failed = sum(not r.ok for r in rows)
    lines.append("")
    lines.append("PASS: every check passed" if not failed else f"FAIL: {failed} of {len(rows)} check(s) failed")
    return "\n".join(lines)


def _classes_from_metadata(meta: Mapping[str, Any]) -> list[str]:
    if isinstance(meta.get("classes"), list):
        return list(meta["classes"])
    channel_def = meta["network_data_format"]["outputs"][Head.CLS.value]["channel_def"]
    return [channel_def[k].replace(" (logit)", "") for k in sorted(channel_def, key=int)]


def verify_bundle(bundle: str | os.PathLike, runtimes: Sequence[str] | None = None,
                  device: str = "cpu") -> list[CheckRow]:
    """Check a bundle against its metadata, head by head (what MONAI's ``verify_net_in_out`` does for one output).

    1. ``configs/metadata.json`` follows the shipped schema (both heads described);
    2. the network builds from the configs (``export_network``; an exported bundle's ``deploy.yaml`` pins the run,
       a source bundle takes its classes from the metadata) and loads ``models/model.pt`` when present;
    3. for the eager network and every exported model present (``model.ts``, ``model.onnx``), a random input of the
       metadata's shape ``(1, C, H, W)`` gives ``seg`` of shape ``(1, S, H, W)`` and ``cls`` of shape ``(1, K)`` with
       the metadata's channel counts and dtypes.

    Args:
        bundle: bundle folder.
        runtimes: restrict to some of ``"torch"``, ``"torchscript"``, ``"onnx"`` (default: every one available).
        device: where to run.

    Returns:
        the check rows (``all(r.ok for r in rows)`` is the verdict); a failing step adds a failed row and stops
        only what depends on it.
    """
    root = Path(bundle).resolve()
    meta, rows = _metadata(root)
    if meta is None:
        return rows

    fmt = meta["network_data_format"]
    image, seg_meta, cls_meta = fmt["inputs"]["image"], fmt["outputs"][Head.SEG.value], fmt["outputs"][Head.CLS.value]
    shape_in = (1, int(image["num_channels"]), *[int(s) for s in image["spatial_shape"]])
    seg_shape = (1, int(seg_meta["num_channels"]), *[int(s) for s in seg_meta["spatial_shape"]])
    cls_shape = (1, int(cls_meta["num_channels"]))

    deployed = (root / "configs" / "deploy.yaml").is_file()
    overrides = {} if deployed else {"classes": _classes_from_metadata(meta), "datalist": ""}
    try:
        parser = bundle_parser(root, ("common.yaml", "deploy.yaml"), **overrides)
        wrapper = parser.get_parsed_content("export_network").to(device).eval()
        classes = list(parser.get_parsed_content("classes"))
        in_channels = int(parser.get_parsed_content("in_channels"))
    except Exception as e:
        rows.append(CheckRow("build export_network", "builds", "error", False, f"{type(e).__name__}: {e}"))
        return rows
    rows.append(CheckRow("build export_network", "builds", type(wrapper.network).__name__, True,
                         "configs/deploy.yaml" if deployed else "source bundle, random weights"))
    rows.append(CheckRow("input channels (metadata vs config)", str(shape_in[1]), str(in_channels),
                         shape_in[1] == in_channels))
    rows.append(CheckRow("classes (cls channels vs config)", str(cls_shape[1]), f"{len(classes)}: {', '.join(classes)}",
                         cls_shape[1] == len(classes)))

    available = {"torch": True, "torchscript": (root / "models" / MODEL_FILES["torchscript"]).is_file(),
                 "onnx": (root / "models" / MODEL_FILES["onnx"]).is_file()}
    wanted = list(runtimes) if runtimes else [r for r, ok in available.items() if ok]
    weights = root / "models" / MODEL_FILES["torch"]
    if "torch" in wanted and weights.is_file():
        try:
            wrapper.load_state_dict(load_state_dict(weights))
            rows.append(CheckRow("load models/model.pt", "loads", "loaded", True, "weights_only=True"))
        except Exception as e:
            rows.append(CheckRow("load models/model.pt", "loads", "error", False, f"{type(e).__name__}: {e}"))

    x = torch.rand(shape_in, generator=torch.Generator().manual_seed(0)).to(device)
    for runtime in wanted:
        if runtime != "torch" and not available.get(runtime, False):
            rows.append(CheckRow(f"{runtime}: model file", f"models/{MODEL_FILES[runtime]}", "missing", False))
            continue
        try:
            model = wrapper if runtime == "torch" else (
                load_torchscript(root / "models" / MODEL_FILES["torchscript"], device) if runtime == "torchscript"
                else OnnxModel(root / "models" / MODEL_FILES["onnx"], device))
            with torch.no_grad():
                seg, cls = model(x)
        except Exception as e:
            rows.append(CheckRow(f"{runtime}: forward {list(shape_in)}", "runs", "error", False,
                                 f"{type(e).__name__}: {e}"))
            continue
        rows += _output_rows(runtime, ((Head.SEG.value, seg, seg_shape, seg_meta),
                                       (Head.CLS.value, cls, cls_shape, cls_meta)))
    return rows


def _metadata(root: Path) -> tuple[dict[str, Any] | None, list[CheckRow]]:
    """The bundle's ``metadata.json`` and its check rows; None (and a failed row) when it is missing, not JSON or
    not valid per the shipped schema."""
    from pipeline.schemas import metadata_errors

    meta_path = root / "configs" / "metadata.json"
    if not meta_path.is_file():
        return None, [CheckRow("metadata.json", "present", "missing", False, str(meta_path))]
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        return None, [CheckRow("metadata.json", "valid JSON", "invalid", False, str(e))]
    errors = metadata_errors(meta)
    row = CheckRow("metadata schema", "meta_schema.json", "valid" if not errors else f"{len(errors)} error(s)",
                   not errors, "; ".join(errors))
    return (None if errors else meta), [row]


def _output_rows(runtime: str, heads: Sequence[tuple[str, torch.Tensor, tuple[int, ...], dict[str, Any]]]
                 ) -> list[CheckRow]:
    """Shape, dtype and finiteness of each head's output (``(head, output, expected shape, head metadata)``)."""
    rows = []
    for head, out, shape, head_meta in heads:
        rows.append(CheckRow(f"{runtime}: {head} shape", str(list(shape)), str(list(out.shape)),
                             tuple(out.shape) == shape))
        dtype = str(out.dtype).replace("torch.", "")
        rows.append(CheckRow(f"{runtime}: {head} dtype", head_meta["dtype"], dtype, dtype == head_meta["dtype"]))
        finite = bool(torch.isfinite(out).all())
        rows.append(CheckRow(f"{runtime}: {head} finite", "all finite", "yes" if finite else "no", finite))
    return rows
