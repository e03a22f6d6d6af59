"""What makes a folder a complete exported bundle and which model file each runtime reads, checked without torch or
MONAI, so that ``bmtl predict`` and ``bmtl log-model`` answer a wrong ``--bundle`` or ``--runtime`` at once."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.data.io import DataError

__all__ = ["EXPORT_REPORT", "MODEL_FILES", "RUNTIMES", "exported_bundle_root", "resolve_runtime", "check_export_paths"]

EXPORT_REPORT = "export_report.json"  # in models/, written last by `bmtl export`: the completion marker of an export
RUNTIMES = ("auto", "torch", "torchscript", "onnx")
MODEL_FILES = {"torch": "model.pt", "torchscript": "model.ts", "onnx": "model.onnx"}   # in models/


def exported_bundle_root(bundle: str | os.PathLike) -> Path:
    """The resolved folder of a complete exported bundle.

    Raises:
        FileNotFoundError: not an exported bundle (no ``configs/deploy.yaml``).
        pipeline.data.io.DataError: an incomplete one (no ``models/export_report.json``).
    """
    root = Path(bundle).resolve()
    if not (root / "configs" / "deploy.yaml").is_file():
        raise FileNotFoundError(f"{root} is not an exported bundle (configs/deploy.yaml not found): make one "
                                "with `bmtl export --bundle SOURCE_BUNDLE --run RUN_DIR --output DIR`")
    if not (root / "models" / EXPORT_REPORT).is_file():
        # without it the folder is a partial copy or an interrupted export
        raise DataError(root, f"incomplete exported bundle: models/{EXPORT_REPORT}, which `bmtl export` writes "
                              "last, is missing (an interrupted export or a partial copy); re-export it with `bmtl "
                              f"export --bundle SOURCE_BUNDLE --run RUN_DIR --output {root} --overwrite`")
    return root


def resolve_runtime(models: Path, runtime: str) -> str:
    """The runtime to use for the model files in ``models``: ``runtime`` itself (its file must exist) or, for
    ``"auto"``, TorchScript, else ONNX (when ONNX Runtime is installed), else torch, whichever file exists first.

    Raises:
        ValueError: an unknown runtime.
        FileNotFoundError: the runtime's model file (or, for ``"auto"``, every model file) is missing.
    """
    runtime = (runtime or "auto").lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime == "auto":
        for candidate in ("torchscript", "onnx", "torch"):
            if (models / MODEL_FILES[candidate]).is_file():
                if candidate == "onnx":
                    try:
                        import onnxruntime  # noqa: F401
                    except ImportError:
                        continue
                return candidate
        raise FileNotFoundError(f"no model in {models} (expected model.ts, model.onnx or model.pt)")
    if not (models / MODEL_FILES[runtime]).is_file():
        raise FileNotFoundError(f"runtime {runtime} needs {models / MODEL_FILES[runtime]}, which does not exist")
    return runtime


def check_export_paths(bundle: str | os.PathLike, run: str | os.PathLike, output: str | os.PathLike,
                       checkpoint: str = "model.pt", overwrite: bool = False) -> tuple[Path, Path, Path]:
    """The resolved source bundle, training run and output of ``bmtl export``, checked before anything is built (and
    before torch is imported: a wrong path is answered at once).

    Raises:
        FileNotFoundError: no bundle, no ``run_config.json`` in the run (the message says what writes it), no
            checkpoint.
        ValueError: the output is the source bundle, or holds it or the run.
        FileExistsError: the output exists, is not empty and ``overwrite`` is off.
    """
    bundle, run, output = Path(bundle).resolve(), Path(run).resolve(), Path(output).resolve()
    if not (bundle / "configs" / "common.yaml").is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle: configs/common.yaml not found")
    if not (run / "run_config.json").is_file():
        raise FileNotFoundError(f"{run / 'run_config.json'} not found: a training run (`python -m monai.bundle run "
                                "training ...`) writes it into its output_dir; --run must be that folder")
    ckpt = run / "models" / checkpoint
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found")
    if output == bundle:
        raise ValueError(f"output {output} must not be the source bundle itself")
    for source, what in ((bundle, "source bundle"), (run, "training run")):
        if output in source.parents or output == source:
            raise ValueError(f"output {output} holds the {what} {source}: replacing it would delete it")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty (use --overwrite to replace it)")
    return bundle, run, output
