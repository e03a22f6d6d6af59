"""Export of two-head networks: a wrapper returning ``(seg, cls)``, TorchScript and ONNX export, parity checks.

The zoo's networks return a dict; TorchScript tracing, ONNX export and MONAI's bundle tools want tensors, so every
export goes through ``ExportWrapper``. An exported model is only written when it reproduces the eager network: both
heads within ``atol`` (1e-4) on random inputs and on a synthetic image (``check_parity``); otherwise the export raises
``ExportParityError`` naming the head, the input and the largest difference.

Typical use (what ``bmtl export`` does for a whole bundle, see ``pipeline.deploy.export_bundle``)::

    wrapper = ExportWrapper(network).eval()
    inputs = parity_inputs(in_channels=1, image_size=(128, 128))
    export_torchscript(wrapper, "model.ts", inputs)   # traced, checked, saved with metadata
    export_onnx(wrapper, "model.onnx", inputs)        # one file (no external data), checked with onnxruntime
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.data.io import DataError
from pipeline.keys import Head

__all__ = [
    "ExportWrapper",
    "ExportParityError",
    "DEFAULT_ATOL",
    "ONNX_INPUT",
    "ONNX_OUTPUTS",
    "parity_inputs",
    "check_parity",
    "export_torchscript",
    "export_onnx",
    "load_torchscript",
    "read_torchscript_metadata",
    "OnnxModel",
]

DEFAULT_ATOL = 1e-4
ONNX_INPUT = "image"
ONNX_OUTPUTS = (Head.SEG.value, Head.CLS.value)
HEADS = (Head.SEG.value, Head.CLS.value)


class ExportWrapper(nn.Module):
    """Wrap a registered network so that it returns the tuple ``(seg_logits, cls_logits)``.

    TorchScript tracing, ONNX export and MONAI's ``verify_net_in_out`` expect tensors, not a dict; auxiliary outputs
    (deep supervision, coarse regions, the first pass of circle training) are training-only and are dropped.

    ``load_state_dict`` also takes the plain state dict of the wrapped network (what training writes to
    ``models/model.pt``), so that ``python -m monai.bundle ckpt_export --net_id export_network`` can load a training
    checkpoint into the wrapper.

    Args:
        network: a network following the zoo contract (returns a dict with ``"seg"`` and ``"cls"``), or a wrapper of
            one such as ``pipeline.engines.CircleTraining``.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(x)
        return out[Head.SEG.value], out[Head.CLS.value]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load the wrapper's own state dict, or the wrapped network's (keys without the ``network.`` prefix)."""
        own = set(self.state_dict())
        keys = set(state_dict)
        if keys and not keys & own and {f"network.{k}" for k in keys} & own:
            state_dict = {f"network.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class ExportParityError(RuntimeError):
    """An exported model does not reproduce the eager network (the message gives the largest differences)."""


# ----------------------------------------------------------------------------------------------------- parity inputs
def parity_inputs(
    in_channels: int,
    image_size: Sequence[int],
    extra_input_channels: Sequence[str] = (),
    batch: int = 2,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Inputs on which an export is compared with the eager network.

    Returns:
        ``{"random uniform": ..., "random normal": ..., "synthetic ultrasound": ...}``, each ``(batch, C, H, W)``
        float32. The synthetic batch holds ``make_us_case`` images (a benign and a malignant lesion) scaled to [0, 1]
        with the preset's extra channels computed as in preprocessing (or the grey image repeated when
        ``extra_input_channels`` does not say what the other channels are).
    """
    from pipeline.data.synthetic_us import make_us_case
    from pipeline.transforms import extra_channels

    h, w = (int(s) for s in image_size)
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, in_channels, h, w)
    rng = np.random.default_rng(seed)
    images = []
    for i in range(batch):
        grey, _ = make_us_case(rng, ("benign", "malignant")[i % 2], size=(max(h, 32), max(w, 32)))
        img = torch.as_tensor(grey, dtype=torch.float32)[None, :h, :w] / 255.0
        if len(extra_input_channels) == in_channels - 1:
            img = extra_channels(list(extra_input_channels), keys="image")({"image": img})["image"]
        else:
            img = img.repeat(in_channels, 1, 1)
        images.append(torch.as_tensor(img, dtype=torch.float32))
    return {
        "random uniform": torch.rand(shape, generator=gen),
        "random normal": torch.randn(shape, generator=gen),
        "synthetic ultrasound": torch.stack(images),
    }


def _as_tuple(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(out, Mapping):
        return torch.as_tensor(out[Head.SEG.value]), torch.as_tensor(out[Head.CLS.value])
    seg, cls = out
    return torch.as_tensor(seg), torch.as_tensor(cls)


def _max_diffs(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> dict[str, float]:
    diffs = {}
    for head, x, y in zip(HEADS, a, b):
        if tuple(x.shape) != tuple(y.shape):
            raise ExportParityError(f"{head} head: exported shape {tuple(y.shape)} differs from eager {tuple(x.shape)}")
        diffs[head] = float((x.detach().double().cpu() - y.detach().double().cpu()).abs().max())
    return diffs


@torch.no_grad()
def check_parity(
    eager: nn.Module,
    exported: Callable[[torch.Tensor], Any],
    inputs: Mapping[str, torch.Tensor],
    atol: float = DEFAULT_ATOL,
    name: str = "exported model",
) -> dict[str, dict[str, float]]:
    """Compare an exported model with the eager network, head by head, on every input.

    A head passes when ``max |exported - eager| <= atol``. When it does not, the eager network is run once more in
    float64: the head still passes when the export is at least as close to that float64 reference as the float32
    eager output is (the difference is float32 rounding inside the network, e.g. a normalisation of nearly constant
    features, and not an export error); the report says so.

    Args:
        eager: the eager module returning ``(seg, cls)`` (an ``ExportWrapper``), in eval mode.
        exported: the exported callable, returning ``(seg, cls)`` or a dict with both heads.
        inputs: named input batches (see ``parity_inputs``).
        atol: absolute tolerance on the logits.
        name: what is checked, for messages (``"TorchScript"``, ``"ONNX Runtime"``).

    Returns:
        ``{input_name: {"seg": max_abs_diff, "cls": max_abs_diff}}`` (plus ``"<head>_float64"`` entries when the
        float64 reference was needed).

    Raises:
        ExportParityError: a head differs by more than ``atol`` (the message gives every input's differences).
    """
    eager = eager.eval()
    report: dict[str, dict[str, float]] = {}
    failures = []
    reference64: nn.Module | None = None
    for label, x in inputs.items():
        ref = _as_tuple(eager(x))
        got = _as_tuple(exported(x))
        diffs = _max_diffs(ref, got)
        if any(d > atol for d in diffs.values()):
            if reference64 is None:
                try:
                    reference64 = copy.deepcopy(eager).double().eval()
                except Exception:  # pragma: no cover - a network that cannot run in float64
                    reference64 = eager
            try:
                ref64 = _as_tuple(reference64(x.double()))
            except Exception:  # pragma: no cover
                ref64 = ref
            eager_err = _max_diffs(ref64, ref)
            export_err = _max_diffs(ref64, got)
            for head in HEADS:
                if diffs[head] > atol:
                    diffs[f"{head}_float64"] = export_err[head]
                    if export_err[head] > max(atol, eager_err[head]):
                        failures.append(f"{head} on {label!r}: max |{name} - eager| = {diffs[head]:.3g} > atol "
                                        f"{atol:g} (float64 reference: {name} off by {export_err[head]:.3g}, eager "
                                        f"float32 by {eager_err[head]:.3g})")
        report[label] = diffs
    if failures:
        table = "; ".join(f"{k}: seg {v['seg']:.3g}, cls {v['cls']:.3g}" for k, v in report.items())
        raise ExportParityError(f"{name} does not match the eager network: " + " | ".join(failures)
                                + f". Max abs differences per input: {table}")
    return report


# ------------------------------------------------------------------------------------------------------ TorchScript
@contextlib.contextmanager
def _quiet():
    """Silence the tracer's and the ONNX exporter's warnings and progress prints."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.__trace", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_torchscript(
    wrapper: nn.Module,
    path: str | os.PathLike,
    inputs: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    atol: float = DEFAULT_ATOL,
) -> dict[str, dict[str, float]]:
    """Trace ``wrapper`` (``torch.jit.trace`` through MONAI's ``convert_to_torchscript``), save it with ``meta`` as
    MONAI's ``metadata.json`` extra file (``save_net_with_metadata``, the format ``ckpt_export`` writes), load it back
    and check parity. The file is written and checked under a temporary name and renamed to ``path`` only when parity
    holds (``pipeline.atomic``): a failed export leaves ``path`` as it was.

    Args:
        wrapper: an ``ExportWrapper`` (or any module returning ``(seg, cls)``), on CPU.
        path: the ``.ts`` file.
        inputs: parity inputs; the first one is the tracing example.
        meta: metadata stored in the file (e.g. the bundle's metadata.json).
        extra_files: more files to store (e.g. ``{"inference.json": b"..."}``).
        atol: parity tolerance.

    Returns:
        the parity report of ``check_parity``.

    Raises:
        ExportParityError: the traced model does not reproduce the eager one.
    """
    from monai.data.torchscript_utils import save_net_with_metadata
    from monai.networks.utils import convert_to_torchscript

    wrapper = wrapper.eval()
    example = next(iter(inputs.values()))
    with _quiet():
        traced = convert_to_torchscript(wrapper, inputs=[example], use_trace=True, verify=False, check_trace=False)
    with atomic_path(path) as tmp:  # only a model that passed the parity check becomes ``path``
        with _quiet():
            # save_net_with_metadata adds ".ts" only to a name without extension: the temporary name keeps its own
            save_net_with_metadata(traced, str(tmp), include_config_vals=True, meta_values=dict(meta or {}),
                                   more_extra_files=dict(extra_files or {}))
        report = check_parity(wrapper, load_torchscript(tmp), inputs, atol=atol, name="TorchScript")
    return report


def _unreadable(path: str | os.PathLike, what: str, error: BaseException) -> DataError:
    """The error for a model file that does not load: names the file, the loader's first line, and the fix."""
    lines = str(error).strip().splitlines()
    detail = lines[0].strip().split(". ", 1)[0][:300] if lines else ""  # torch appends paragraphs of advice
    return DataError(path, f"not a readable {what} model (truncated or corrupt file? re-export the bundle with "
                           f"`bmtl export ... --overwrite`): {type(error).__name__}: {detail}")


def _jit_load(path: str | os.PathLike, device: str | torch.device, **kwargs: Any) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript model {path} not found")
    if path.stat().st_size == 0:
        raise DataError(path, "TorchScript model file is empty (0 bytes): an interrupted export? re-export the bundle")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location=device, **kwargs)
    except (RuntimeError, ValueError, OSError, EOFError) as e:  # torch's message alone does not name the file
        raise _unreadable(path, "TorchScript", e) from None


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript model (no training code needed), in eval mode on ``device``.

    Raises:
        FileNotFoundError: no such file.
        pipeline.data.io.DataError: an empty, truncated or corrupt file (the message names it).
    """
    return _jit_load(path, device).eval()


def read_torchscript_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata.json`` stored in a TorchScript file by ``export_torchscript`` / ``ckpt_export``."""
    from monai.data.torchscript_utils import METADATA_FILENAME

    files = {METADATA_FILENAME: ""}
    _jit_load(path, "cpu", _extra_files=files)
    return json.loads(files[METADATA_FILENAME] or "{}")


# ------------------------------------------------------------------------------------------------------------- ONNX
def export_onnx(
    wrapper: nn.Module,
    path: str | os.PathLike,
    inputs: Mapping[str, torch.Tensor],
    atol: float = DEFAULT_ATOL,
    opset_version: int | None = None,
) -> dict[str, dict[str, float]]:
    """Export ``wrapper`` to ONNX as one file and check parity with ONNX Runtime.

    The export uses MONAI's ``convert_to_onnx`` with torch's dynamo exporter and ``external_data=False`` (every
    weight inside the one ``.onnx`` file). The graph has one input ``"image"`` ``(batch, C, H, W)`` and two outputs
    ``"seg"`` and ``"cls"``; the batch axis is dynamic, the spatial size is the one of the inputs (the training size:
    predictions resize to it, and sliding-window tiles have it). The file is written and checked under a temporary
    name and renamed to ``path`` only when parity holds: a failed export leaves ``path`` as it was.

    Raises:
        ExportParityError: ONNX Runtime does not reproduce the eager network.
        ImportError: onnx, onnxscript or onnxruntime is missing (``pip install breast-mtl[onnx]``).
    """
    from monai.networks.utils import convert_to_onnx

    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError as e:
            raise ImportError(f"ONNX export needs {module}: pip install 'breast-mtl[onnx]'") from e
    wrapper = wrapper.eval()
    example = next(iter(inputs.values()))
    dynamic = {ONNX_INPUT: {0: "batch"}, ONNX_OUTPUTS[0]: {0: "batch"}, ONNX_OUTPUTS[1]: {0: "batch"}}
    with atomic_path(path) as tmp:  # only a model that passed the parity check becomes ``path``
        with _quiet():
            convert_to_onnx(wrapper, [example], input_names=[ONNX_INPUT], output_names=list(ONNX_OUTPUTS),
                            dynamic_axes=dynamic, filename=str(tmp), opset_version=opset_version, verify=False,
                            use_trace=True, dynamo=True, external_data=False, verbose=False)
        sidecar = tmp.with_name(tmp.name + ".data")
        if sidecar.exists():  # pragma: no cover - external_data=False keeps the weights inside
            sidecar.unlink()
            raise RuntimeError(f"ONNX export wrote external data beside {path}; expected one file")
        report = check_parity(wrapper, OnnxModel(tmp), inputs, atol=atol, name="ONNX Runtime")
    return report


class OnnxModel:
    """An ONNX Runtime session called like the exported torch module: ``model(x) -> (seg, cls)`` tensors.

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"`` or a CUDA device; CUDA uses the ``CUDAExecutionProvider`` when onnxruntime has it.
        threads: intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} not found")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime's errors (InvalidProtobuf, Fail) are not RuntimeErrors: name the file
            raise _unreadable(self.path, "ONNX", e) from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = torch.device(device)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = dict(zip(self.output_names, self.session.run(None, {self.input_name: array})))
        seg, cls = (outputs[n] for n in ONNX_OUTPUTS) if set(ONNX_OUTPUTS) <= set(outputs) else outputs.values()
        return torch.from_numpy(seg).to(self.device), torch.from_numpy(cls).to(self.device)

    def eval(self) -> OnnxModel:
        return self
