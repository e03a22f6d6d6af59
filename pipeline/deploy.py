"""Deployment of a trained bundle: a self-contained exported bundle folder (``export_bundle``; its check is
``pipeline.verify.verify_bundle``).

Exported bundle layout (``bmtl export --bundle bundles/breast_us_mtl --run RUN_DIR --output EXPORT_DIR``)::

    EXPORT_DIR/
      configs/common.yaml       the source bundle's shared definitions (preprocessing, network, post-processing)
      configs/deploy.yaml       what training knew, pinned from RUN_DIR/run_config.json: classes, preset, image size,
                                input channels, network name and arguments, circle training, modality, threshold;
                                ``datalist: ""`` (nothing reads a datalist)
      configs/inference.yaml    inference settings and the ``inferring`` run id
      configs/inference.json    common + deploy + inference merged into one file (generated): ``python -m monai.bundle
                                run --config_file configs/inference.json`` needs nothing else
      configs/evaluate.yaml     the ``evaluating`` workflow, for ``bmtl evaluate --bundle EXPORT_DIR --datalist D``
                                (external validation of the model as deployed; merged before deploy.yaml)
      configs/metadata.json     MONAI metadata filled with the run's classes, sizes and channels (both heads)
      configs/logging.conf
      models/model.pt           the best network state dict (plain, loads with ``torch.load(weights_only=True)``)
      models/model.ts           TorchScript (traced ``ExportWrapper``: returns ``(seg, cls)``), metadata inside
      models/model.onnx         ONNX, one file, input ``image``, outputs ``seg`` and ``cls``, dynamic batch
      models/export_report.json parity of each export with the eager network, versions, source run
      docs/README.md            how to run it
      docs/model_card.md        what the model was trained on, its evaluations with CIs, intended use, limits
      LICENSE

The folder needs no training config, no datalist and no training run: ``bmtl predict --bundle EXPORT_DIR ...`` and
``python -m monai.bundle run inferring`` work from it alone (see ``pipeline.inference``).

The bundle is built and checked in a hidden sibling folder and only then swapped in (``pipeline.atomic.atomic_dir``):
an export that fails or is interrupted leaves the previous bundle as it was. ``models/export_report.json`` is written
last and marks a complete export: ``bmtl predict`` refuses a bundle without it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.bundle import ConfigParser

from pipeline.atomic import atomic_dir, atomic_path, write_json_atomic, write_text_atomic
from pipeline.bundle_folder import EXPORT_REPORT, MODEL_FILES, check_export_paths
from pipeline.export import (
    DEFAULT_ATOL,
    ExportWrapper,
    export_onnx,
    export_torchscript,
    parity_inputs,
)
from pipeline.keys import Head
from pipeline.model_card import build_model_card, eval_metrics, training_data
from pipeline.presets import preset_name

__all__ = [
    "FORMATS",
    "COPIED_CONFIGS",
    "STANDALONE_INFERENCE",
    "EXPORT_REPORT",
    "load_run_config",
    "deploy_config",
    "fill_metadata",
    "bundle_parser",
    "load_state_dict",
    "export_bundle",
]

FORMATS = ("torchscript", "onnx")
COPIED_CONFIGS = ("common.yaml", "inference.yaml", "evaluate.yaml", "logging.conf")
STANDALONE_INFERENCE = "inference.json"   # generated: what MONAI Label / Deploy load on its own
STANDALONE_INFERENCE_PARTS = ("common.yaml", "deploy.yaml", "inference.yaml")
RUN_CONFIG = "run_config.json"


# ------------------------------------------------------------------------------------------------------ run config
def load_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN_DIR/run_config.json`` written by training (what export needs to rebuild the network).

    Raises:
        FileNotFoundError: no such file (the message says what writes it).
        ValueError: a required key is missing.
    """
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a training run (`python -m monai.bundle run training ...`) writes "
                                "it into its output_dir; --run must be that folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    required = ("network_name", "network_kwargs", "in_channels", "classes", "image_size")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    return config


def deploy_config(run_config: Mapping[str, Any], cls_threshold: float | None = None) -> dict[str, Any]:
    """The content of ``configs/deploy.yaml``: every value training derived from the datalist or the preset, pinned,
    with the operating threshold chosen on the validation fold for the exported checkpoint (``None``: argmax)."""
    name = preset_name(run_config.get("preset", run_config["network_name"]))
    return {
        "datalist": "",
        "use_mlflow": False,
        "modality": run_config.get("modality", "US"),
        "classes": list(run_config["classes"]),
        "preset": name,
        "preset_merged": name,   # the values below are the run's own: pipeline.presets.require_merged holds
        "network_name": run_config["network_name"],
        "network_kwargs": dict(run_config["network_kwargs"]),
        "image_size": [int(s) for s in run_config["image_size"]],
        # runs from before `resize_mode` existed were trained on area-resized images
        "resize_mode": str(run_config.get("resize_mode", "area")),
        "keep_aspect": bool(run_config.get("keep_aspect", False)),
        "in_channels": int(run_config["in_channels"]),
        "extra_input_channels": list(run_config.get("extra_input_channels", [])),
        "circle_training": bool(run_config.get("circle_training", False)),
        # the auxiliary heads are part of the checkpoint (unused at inference): the network is built with them
        "aux_targets": dict(run_config.get("aux_targets", {})),
        "seg_threshold": float(run_config.get("seg_threshold", 0.5)),
        "cls_threshold": None if cls_threshold is None else float(cls_threshold),
        "output_dir": "$os.path.join(@bundle_root, 'predictions')",
        "source_run": {k: run_config.get(k) for k in ("bundle", "preset", "datalist", "fold", "seed")},
    }


_DEPLOY_HEADER = """\
# Deployment pins written by `bmtl export` from the training run's run_config.json: everything training derived from
# the datalist and the preset is fixed here, so that nothing reads a datalist or a training config.
# Use with common.yaml and inference.yaml:
#   python -m monai.bundle run inferring --bundle_root . \\
#     --config_file "['configs/common.yaml','configs/deploy.yaml','configs/inference.yaml']" \\
#     --input_dir IN --output_dir OUT
"""


def fill_metadata(template: Mapping[str, Any], run_config: Mapping[str, Any], seg_channels: int = 1,
                  onnx: bool = False, cls_threshold: float | None = None) -> dict[str, Any]:
    """The bundle's ``metadata.json`` with the run's classes, input channels, sizes and versions filled in."""
    import monai
    import numpy

    meta = json.loads(json.dumps(template))
    classes = list(run_config["classes"])
    size = [int(s) for s in run_config["image_size"]]
    in_channels = int(run_config["in_channels"])
    extra = list(run_config.get("extra_input_channels", []))
    meta["monai_version"] = monai.__version__
    meta["pytorch_version"] = torch.__version__.split("+")[0]
    meta["numpy_version"] = numpy.__version__
    packages = dict(meta.get("required_packages_version", {}))
    if onnx:
        import onnxruntime

        packages["onnxruntime"] = onnxruntime.__version__
    meta["required_packages_version"] = packages
    meta["classes"] = classes
    fmt = meta.setdefault("network_data_format", {})
    image = fmt.setdefault("inputs", {}).setdefault("image", {})
    image.update(
        type="image", num_channels=in_channels, spatial_shape=size, dtype="float32", is_patch_data=False,
        modality=run_config.get("modality", image.get("modality", "US")),
        channel_def={str(i): name for i, name in enumerate(["image", *extra][:in_channels])},
    )
    image.setdefault("format", "magnitude")
    image.setdefault("value_range", [0, 1])
    outputs = fmt.setdefault("outputs", {})
    seg = outputs.setdefault(Head.SEG.value, {})
    seg.update(type="image", format="segmentation", num_channels=int(seg_channels), spatial_shape=size,
               dtype="float32", is_patch_data=False)
    seg.setdefault("value_range", [])
    seg["channel_def"] = {"0": "lesion (logit)"} if seg_channels == 1 else {
        str(i): f"channel {i} (logit)" for i in range(seg_channels)}
    cls = outputs.setdefault(Head.CLS.value, {})
    cls.update(type="probabilities", format="classes", num_channels=len(classes), spatial_shape=[len(classes)],
               dtype="float32", is_patch_data=False,
               channel_def={str(i): f"{c} (logit)" for i, c in enumerate(classes)})
    cls.setdefault("value_range", [])
    meta["deployment"] = {
        "preset": preset_name(run_config.get("preset", "")),
        "network_name": run_config["network_name"],
        "circle_training": bool(run_config.get("circle_training", False)),
        "seg_threshold": float(run_config.get("seg_threshold", 0.5)),
        "cls_threshold": None if cls_threshold is None else float(cls_threshold),
        "exported": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    return meta


# ------------------------------------------------------------------------------------------------ config parsing
def bundle_parser(bundle: str | os.PathLike, files: Sequence[str] = ("common.yaml", "deploy.yaml"),
                  **overrides: Any):
    """A MONAI ``ConfigParser`` of ``bundle/configs/<files>`` (missing optional files skipped) with the metadata.

    ``common.yaml`` is required; ``bundle_root`` is set to the bundle folder; ``overrides`` replace config values.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle).resolve()
    configs = root / "configs"
    if not (configs / "common.yaml").is_file():
        raise FileNotFoundError(f"{root} is not a bundle: {configs / 'common.yaml'} not found")
    paths = [str(configs / f) for f in files if (configs / f).is_file()]
    parser = ConfigParser()
    parser.read_config(paths)
    if (configs / "metadata.json").is_file():
        parser.read_meta(str(configs / "metadata.json"))
    parser["bundle_root"] = str(root)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A network state dict from ``path`` with ``torch.load(weights_only=True)``; a training checkpoint holding
    ``{"network": state_dict, ...}`` (``last.pt``) gives its network entry."""
    from pipeline.handlers.checkpoint import load_checkpoint

    state = load_checkpoint(path, map_location="cpu")  # weights_only=True, errors name the file
    if isinstance(state, Mapping) and "network" in state and isinstance(state["network"], Mapping):
        state = state["network"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: not a state dict")
    return dict(state)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------- export
def export_bundle(
    bundle: str | os.PathLike,
    run: str | os.PathLike,
    output: str | os.PathLike,
    formats: Sequence[str] = FORMATS,
    checkpoint: str = "model.pt",
    atol: float = DEFAULT_ATOL,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build a self-contained exported bundle from a source bundle and one of its training runs.

    Copies the shared configs, pins the run in ``configs/deploy.yaml``, fills ``metadata.json``, copies the
    checkpoint to ``models/model.pt``, rebuilds ``export_network`` from the exported configs alone (proving they
    suffice), and writes ``models/model.ts`` and/or ``models/model.onnx`` after checking parity with the eager network
    on random and synthetic inputs, then ``models/export_report.json``. All of it happens in a hidden sibling folder
    that replaces ``output`` only once complete: on any failure it is removed and ``output`` (a previous bundle, with
    ``overwrite``) is left untouched.

    Args:
        bundle: the source bundle folder (``bundles/breast_us_mtl``).
        run: the training run folder (its ``output_dir``: ``run_config.json`` and ``models/``).
        output: the exported bundle folder to create (must not exist or be empty unless ``overwrite``).
        formats: any of ``"torchscript"``, ``"onnx"``.
        checkpoint: checkpoint file name in ``run/models`` (``model.pt``: the best; ``last.pt`` also works).
        atol: parity tolerance on the logits of both heads.
        overwrite: replace an existing non-empty ``output`` (once the new bundle is complete).

    Returns:
        the export report (also written to ``models/export_report.json``).

    Raises:
        FileNotFoundError: missing bundle, run config or checkpoint.
        FileExistsError: ``output`` exists and is not empty.
        ValueError: unknown format; metadata not following the schema; ``output`` is the source bundle or holds it or
            the run (replacing it would delete them).
        pipeline.export.ExportParityError: an export does not reproduce the eager network.
    """
    from pipeline.schemas import validate_metadata

    formats = [f.lower() for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    bundle, run, output = check_export_paths(bundle, run, output, checkpoint, overwrite)
    run_config = load_run_config(run)
    ckpt = run / "models" / checkpoint
    # built and checked beside output, swapped in only when complete: a failure keeps the previous bundle
    with atomic_dir(output) as staging:
        return _export_into(bundle, run, run_config, ckpt, staging, formats, atol, validate_metadata)


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copy2(source, tmp)


def _write_configs(bundle: Path, run: Path, run_config: dict, ckpt: Path,
                   output: Path) -> tuple[float | None, dict[str, Any]]:
    """The exported bundle's configs (the copied ones, ``deploy.yaml`` pinning the run, the merged
    ``inference.json``), docs and model card; returns the operating threshold pinned and the metadata template."""
    configs = output / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    for name in COPIED_CONFIGS:
        source = bundle / "configs" / name
        if not source.is_file():
            raise FileNotFoundError(f"{source} not found: the bundle must provide it for deployment")
        _copy_atomic(source, configs / name)
    from pipeline.handlers.operating_point import read_operating_threshold

    # the operating point belongs to the best checkpoint (model.pt), whose validation epoch chose it
    cls_threshold = read_operating_threshold(run / "models") if ckpt.name == "model.pt" else None
    write_text_atomic(configs / "deploy.yaml", _DEPLOY_HEADER + yaml.safe_dump(
        deploy_config(run_config, cls_threshold), sort_keys=False, width=1000))
    # the model zoo's one-file inference config: common + deploy + inference merged (MONAI Label and MONAI Deploy
    # load one file), generated here so it never drifts from the three it is made of
    merged = ConfigParser()
    merged.read_config([str(configs / n) for n in STANDALONE_INFERENCE_PARTS])
    with atomic_path(configs / STANDALONE_INFERENCE) as tmp:
        ConfigParser.export_config_file(merged.get(), str(tmp), fmt="json", indent=2)
    for name in ("docs/README.md", "LICENSE"):
        if (bundle / name).is_file():
            _copy_atomic(bundle / name, output / name)
    template = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    write_text_atomic(output / "docs" / "model_card.md",
                      build_model_card(run, run_config, cls_threshold, bundle_name=str(template.get("name", ""))))
    return cls_threshold, template


def _exported_metadata(template: dict[str, Any], run: Path, run_config: dict, seg_channels: int, onnx: bool,
                       cls_threshold: float | None) -> dict[str, Any]:
    """``metadata.json`` of the exported bundle: ``fill_metadata``, the run's numeric ``eval_metrics`` and what the
    model was trained on."""
    meta = fill_metadata(template, run_config, seg_channels=seg_channels, onnx=onnx, cls_threshold=cls_threshold)
    # the model zoo's numeric eval_metrics, from the run's evaluations (the template's descriptions otherwise)
    meta["eval_metrics"] = eval_metrics(run) or meta.get("eval_metrics", {})
    # what this model was trained on, not the template's list of what the bundle can train on
    data = training_data(run_config)
    if data:
        meta["training_data"] = data
    if data.get("synthetic"):
        meta["data_source"] = (f"synthetic images made by `bmtl synth` (dataset {data['name']!r}): no patient data; "
                               "the model demonstrates the pipeline and says nothing about real images")
        meta["references"] = []   # the real datasets' citations do not describe synthetic data
    return meta


def _export_into(bundle: Path, run: Path, run_config: dict, ckpt: Path, output: Path, formats: list[str],
                 atol: float, validate_metadata) -> dict[str, Any]:
    configs, models = output / "configs", output / "models"
    models.mkdir(parents=True, exist_ok=True)
    cls_threshold, template = _write_configs(bundle, run, run_config, ckpt, output)

    # the network from the exported configs alone, with the checkpoint loaded into the export wrapper
    state = load_state_dict(ckpt)
    with atomic_path(models / MODEL_FILES["torch"]) as tmp:
        torch.save(state, tmp)
    parser = bundle_parser(output, ("common.yaml", "deploy.yaml"))
    wrapper = parser.get_parsed_content("export_network")
    if not isinstance(wrapper, ExportWrapper):
        raise TypeError(f"export_network must be a pipeline.export.ExportWrapper, got {type(wrapper).__name__}")
    wrapper.load_state_dict(state)
    wrapper = wrapper.to("cpu").eval()
    size = [int(s) for s in run_config["image_size"]]
    inputs = parity_inputs(int(run_config["in_channels"]), size, run_config.get("extra_input_channels", []))
    with torch.no_grad():
        seg, _ = wrapper(next(iter(inputs.values())))

    meta = _exported_metadata(template, run, run_config, int(seg.shape[1]), "onnx" in formats, cls_threshold)
    validate_metadata(meta)
    write_json_atomic(configs / "metadata.json", meta, indent=4, default=None)

    report: dict[str, Any] = {
        "source_bundle": str(bundle),
        "source_run": str(run),
        "checkpoint": {"file": str(ckpt), "sha256": _sha256(models / "model.pt")},
        "network_name": run_config["network_name"],
        "image_size": size,
        "atol": atol,
        "torch_version": torch.__version__,
        "parity": {},
        "files": {"torch": "models/model.pt"},
    }
    if "torchscript" in formats:
        extra = {f"{Path(n).stem}.json": json.dumps(yaml.safe_load((configs / n).read_text())).encode()
                 for n in ("common.yaml", "deploy.yaml", "inference.yaml")}
        report["parity"]["torchscript"] = export_torchscript(wrapper, models / "model.ts", inputs, meta=meta,
                                                             extra_files=extra, atol=atol)
        report["files"]["torchscript"] = "models/model.ts"
    if "onnx" in formats:
        import onnxruntime

        report["parity"]["onnx"] = export_onnx(wrapper, models / "model.onnx", inputs, atol=atol)
        report["files"]["onnx"] = "models/model.onnx"
        report["onnxruntime_version"] = onnxruntime.__version__
    write_json_atomic(models / EXPORT_REPORT, report, default=None)  # last: marks the export complete
    return report
