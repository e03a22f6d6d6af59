"""The predictor of ``bmtl predict``: an exported bundle's preprocessing, model and post-processing over a list of
inputs, batched, with one table row per input (see ``pipeline.inference``)."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.io import DataError
from pipeline.inference.discovery import InputItem, discover_inputs
from pipeline.inference.ensemble import (
    average_probabilities,
    bundle_cls_threshold,
    check_ensemble_member,
    ensemble_threshold,
)
from pipeline.inference.explain import GradCAMExplainer
from pipeline.inference.loaders import Case, check_pixel_limit, load_case
from pipeline.inference.outputs import capped_size, resize_to, text, write_case_files
from pipeline.inference.runtimes import (
    flag,
    load_eager_network,
    load_model,
    open_exported_bundle,
    resolve_device,
    resolve_runtime,
)
from pipeline.inference.table import CaseSummary, PredictionResult, base_row, case_row, error_row, write_table
from pipeline.prediction_journal import PredictionJournal, check_output_folder
from pipeline.switches import auto_switch

__all__ = ["Predictor", "predict", "unlabelled", "MAX_PIXELS"]

# the default largest image or volume slice: 5000 x 5000 pixels. Peak memory grows with it (0.6 GB + about 85 bytes
# per pixel, the anti-aliased resize): 2.7 GB at 5000 x 5000, 6.1 GB at 8000 x 8000 (benchmarks/predict_memory.py)
MAX_PIXELS = 25_000_000


def unlabelled(transforms: Any) -> list[Callable]:
    """A bundle's preprocessing (a ``Compose``, a list, nested) as a flat list for images without a mask: the
    dictionary transforms skip the training's ``label`` key when it is absent (``allow_missing_keys``)."""
    from monai.transforms import Compose, MapTransform

    flat: list[Callable] = []

    def add(t: Any) -> None:
        if isinstance(t, Compose):
            for inner in t.transforms:
                add(inner)
        elif isinstance(t, (list, tuple)):
            for inner in t:
                add(inner)
        else:
            if isinstance(t, MapTransform):
                t.allow_missing_keys = True
            flat.append(t)

    add(transforms)
    return flat


class Predictor:
    """An exported bundle ready to predict: its configs, preprocessing, model and options.

    Args:
        bundle: the exported bundle folder (``configs/deploy.yaml`` and ``models/``; see ``pipeline.deploy``), or
            several (e.g. one per cross-validation fold): a fold ensemble averaging their lesion and class
            probabilities. They must agree on classes and preprocessing (``ENSEMBLE_KEYS``); the first one's options
            apply, its network gives the Grad-CAM heatmaps, and the class is decided with the mean of their operating
            thresholds (argmax unless every member has one).
        runtime: ``"torchscript"`` (``models/model.ts``), ``"onnx"`` (``models/model.onnx``, ONNX Runtime), ``"torch"``
            (``models/model.pt`` into the network built from the configs) or ``"auto"``: TorchScript, else ONNX, else
            torch, whichever file exists first.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``/None (CUDA when available).
        batch_size: images (or slices) per forward pass; sliding-window tiles per pass with ``native_resolution``.
        threshold: lesion probability threshold (default: the bundle's ``seg_threshold``).
        refine: paper 004 prediction refinement (``pipeline.transforms.RefinePredictiond``): ``True``, ``False`` or
            ``"auto"`` (the default from ``configs/inference.yaml``: on when the classes include "normal").
        explain: write Grad-CAM heatmaps of the classification head (needs ``models/model.pt``).
        overlays: write overlay PNGs.
        native_resolution: sliding-window segmentation at the image's own resolution instead of resizing it to the
            training size (see the module docstring).
        confidence_margin: a prediction whose positive-class probability is this close to the operating threshold
            (without one: whose two most probable classes are within twice this of each other) is flagged
            ``low_confidence`` in the table. Default from ``configs/inference.yaml`` (0.1 when absent).
        slice_axis / input_normalisation / cam_layer: default from ``configs/inference.yaml``.
        tta: test-time augmentation, ``"flip"`` (the left-right flip averaged in, as evaluation does) or ``"none"``;
            default (None): the bundle's ``flip_tta``.
        frame: of a multi-frame DICOM file (a cine loop), predict only this frame (0-based); default: every frame,
            one row each (``frame`` column).
        max_pixels: an input whose images (a volume's slices) have more pixels gets an error row naming the limit,
            checked from its header before it is read where possible (peak memory grows with the image's size);
            None: no limit.
        progress: show a tqdm progress bar.

    Raises:
        FileNotFoundError: not an exported bundle, or the runtime's model file is missing.
        pipeline.data.io.DataError: an incomplete bundle (no ``models/export_report.json``), or a truncated or
            corrupt model file (the message names the folder or the file).
        ValueError: bad option values; ensemble members that disagree on classes or preprocessing.
    """

    def __init__(
        self,
        bundle: str | os.PathLike | Sequence[str | os.PathLike],
        runtime: str = "auto",
        device: str | torch.device | None = "auto",
        batch_size: int | None = None,
        threshold: float | None = None,
        refine: bool | str | None = None,
        explain: bool | None = None,
        overlays: bool | None = None,
        native_resolution: bool | None = None,
        confidence_margin: float | None = None,
        slice_axis: int | None = None,
        input_normalisation: str | None = None,
        cam_layer: str | None = None,
        tta: str | None = None,
        frame: int | None = None,
        max_pixels: int | None = MAX_PIXELS,
        progress: bool = True,
    ) -> None:
        from pipeline.engines import MultiTaskInferer
        from pipeline.transforms import RefinePredictiond

        bundles = [bundle] if isinstance(bundle, (str, os.PathLike)) else list(bundle)
        if not bundles:
            raise ValueError("bundle: give at least one exported bundle")
        self.root, self.parser = open_exported_bundle(bundles[0])
        get = self._get
        self.classes = [str(c) for c in get("classes")]
        self.image_size = tuple(int(s) for s in get("image_size"))
        self.modality = str(get("modality", "US"))
        self.batch_size = int(batch_size if batch_size is not None else get("inference_batch_size", 8))
        self.threshold = float(threshold if threshold is not None else get("seg_threshold", 0.5))
        # the operating threshold of the positive class chosen on the validation fold (deploy.yaml); None: argmax
        self.cls_threshold = bundle_cls_threshold(get("cls_threshold", None), self.root)
        self.normal_index = self.classes.index("normal") if "normal" in self.classes else None
        self.refine = auto_switch("refine", refine if refine is not None else get("refine", "auto"),
                                  self.normal_index is not None)
        self.confidence_margin = float(confidence_margin if confidence_margin is not None
                                       else get("confidence_margin", 0.1))
        self.explain = flag(explain if explain is not None else get("explain", False))
        self.overlays = flag(overlays if overlays is not None else get("overlays", True))
        self.native = flag(native_resolution if native_resolution is not None else get("native_resolution", False))
        self.slice_axis = int(slice_axis if slice_axis is not None else get("slice_axis", 2))
        self.normalisation = str(input_normalisation or get("input_normalisation", "none"))
        self.cam_layer = cam_layer if cam_layer not in (None, "", "null", "None") else get("cam_layer", None)
        self.progress = flag(progress)
        if frame is not None and int(frame) < 0:
            raise ValueError(f"frame must be 0 or more (0-based), got {frame}")
        self.frame = None if frame is None else int(frame)
        if max_pixels is not None and int(max_pixels) < 1:
            raise ValueError(f"max_pixels must be at least 1 (or None: no limit), got {max_pixels}")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        if tta not in (None, "flip", "none"):
            raise ValueError(f"tta must be 'flip' or 'none' (or None: the bundle's flip_tta), got {tta!r}")
        self.flip_tta = flag(get("flip_tta", False)) if tta is None else tta == "flip"
        # the bundle's mask cleaning (largest component, hole filling) after our own threshold, as evaluation does
        from monai.transforms import AsDiscreted

        self.mask_cleaning = [t for t in get("mask_postprocessing", []) if not isinstance(t, AsDiscreted)]
        self._check_options()
        self.device = resolve_device(device)
        self._eager: torch.nn.Module | None = None
        self.runtime = resolve_runtime(self.root / "models", runtime)
        self.models = [load_model(self.root / "models", self.runtime, self.device, self._eager_network)]
        self.roots = [self.root]
        if len(bundles) > 1:
            self._add_ensemble_members(bundles[1:], runtime)
        self.explainer = GradCAMExplainer(self._eager_network, self.device, self.cam_layer)
        self.inferer = MultiTaskInferer(roi_size=self.image_size, sw_batch_size=self.batch_size,
                                        flip_tta=self.flip_tta)
        self.refinement = RefinePredictiond(keys="pred_seg", cls_key="pred_cls", normal_index=self.normal_index,
                                            enabled=self.refine, threshold=self.cls_threshold)
        self.transforms = self._preprocessing()

    # --- configuration
    def _check_options(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.normalisation not in ("none", "percentile"):
            raise ValueError(f"input_normalisation must be 'none' or 'percentile', got {self.normalisation!r}")
        if not 0.0 <= self.confidence_margin < 0.5:
            raise ValueError(f"confidence_margin must be in [0, 0.5), got {self.confidence_margin}")

    def _add_ensemble_members(self, others: Sequence[str | os.PathLike], runtime: str) -> None:
        """The other bundles of a fold ensemble (the same preprocessing and classes: their probabilities are
        averaged); the class threshold becomes the ensemble's (``ensemble_threshold``)."""
        thresholds = [self.cls_threshold]
        for other in others:
            root, parser = open_exported_bundle(other)
            check_ensemble_member(self.root, self.parser, root, parser)
            models = root / "models"
            self.models.append(load_model(models, resolve_runtime(models, runtime), self.device,
                                          functools.partial(load_eager_network, parser, models, self.device)))
            self.roots.append(root)
            value = parser.get_parsed_content("cls_threshold") if "cls_threshold" in parser else None
            thresholds.append(bundle_cls_threshold(value, root))
        self.cls_threshold = ensemble_threshold(thresholds)

    def _get(self, key: str, default: Any = None) -> Any:
        if key not in self.parser:
            return default
        return self.parser.get_parsed_content(key)

    def _eager_network(self) -> torch.nn.Module:
        """The network built from the configs with ``models/model.pt`` (the torch runtime and Grad-CAM), once."""
        if self._eager is None:
            self._eager = load_eager_network(self.parser, self.root / "models", self.device)
        return self._eager

    def _preprocessing(self) -> list[Callable]:
        """The bundle's preprocessing transforms without the file reader (and without resizing in native mode)."""
        from monai.transforms import LoadImaged, Resized, SpatialPadd

        # the bundle's LoadImaged registers every MONAI reader, and the GPU DICOM one warns when nvImageCodec is absent
        plugin_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_logger.level
        plugin_logger.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
                transforms = unlabelled(self.parser.get_parsed_content("preprocessing_transforms"))
        finally:
            plugin_logger.setLevel(level)
        skip = (LoadImaged, Resized, SpatialPadd) if self.native else (LoadImaged,)
        return [t for t in transforms if not isinstance(t, skip)]

    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """The network input of one slice, and the operations MONAI recorded (resize, padding) to invert later."""
        from monai.data import MetaTensor

        data = {"image": image}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. MONAI's "divide by zero" on a constant (empty) slice
            for t in self.transforms:
                data = t(data)
        out = data["image"]
        operations = list(out.applied_operations) if isinstance(out, MetaTensor) else []
        out = torch.as_tensor(out, dtype=torch.float32)
        return (out.as_subclass(torch.Tensor) if hasattr(out, "as_subclass") else out), operations

    def to_input_geometry(self, prob: torch.Tensor, operations: list[dict[str, Any]]) -> torch.Tensor:
        """A ``(1, h, w)`` map at the network's size back to the slice's own geometry: MONAI's inverse of the
        preprocessing's resize (and padding, with ``keep_aspect``), as evaluation's ``Invertd`` does."""
        from monai.data import MetaTensor
        from monai.transforms import Compose

        if not operations:
            return prob
        traced = MetaTensor(prob, applied_operations=[dict(op) for op in operations])
        return torch.as_tensor(Compose(self.transforms).inverse({"image": traced})["image"]).as_subclass(torch.Tensor)

    # --- inference
    @torch.no_grad()
    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lesion probability ``(B, 1, h, w)`` and class probabilities ``(B, C)`` (averaged over an ensemble)."""
        return average_probabilities(self.models, self.inferer, batch.to(self.device))

    def _postprocess(self, prob: torch.Tensor, probs: torch.Tensor, size: tuple[int, int],
                     operations: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, bool]:
        """One slice: lesion probability ``(1, h, w)`` back at ``size`` -> mask; class probabilities; refinement."""
        prob = self.to_input_geometry(prob, operations)
        if tuple(prob.shape[-2:]) != tuple(size):
            raise RuntimeError(f"the lesion probability came back at {tuple(prob.shape[-2:])}, the input is {size}")
        mask = {"pred_seg": (torch.as_tensor(prob) >= self.threshold).float()}
        for clean in self.mask_cleaning:
            mask = clean(mask)
        mask = torch.as_tensor(mask["pred_seg"]) > 0
        refined = self.refinement({"pred_seg": mask, "pred_cls": probs})
        return (np.asarray(torch.as_tensor(refined["pred_seg"])[0].cpu(), dtype=bool),
                np.asarray(torch.as_tensor(refined["pred_cls"]).cpu(), dtype=np.float64), bool(refined["refined"]))

    # --- Grad-CAM
    def gradcam(self, x: torch.Tensor, class_index: int) -> np.ndarray:
        """Grad-CAM of ``class_index`` for one preprocessed image ``(C, h, w)``: ``(h, w)`` in [0, 1]."""
        return self.explainer(x, class_index)

    @property
    def cam_layer_used(self) -> str | None:
        """The layer Grad-CAM read (after the first heatmap)."""
        return self.explainer.layer_used

    # --- the loop
    def _load(self, item: InputItem) -> Case:
        check_pixel_limit(item, None, self.max_pixels)   # from the header, before the pixels are read
        case = load_case(item, self.slice_axis, self.normalisation == "percentile")
        check_pixel_limit(item, case.shape, self.max_pixels)   # every kind, whatever its header told
        return case

    def __call__(self, inputs: str | os.PathLike | Sequence[InputItem], output_dir: str | os.PathLike,
                 overwrite: bool = False, resume: bool = False) -> PredictionResult:
        """Predict ``inputs`` into ``output_dir``; a folder holding an earlier run needs ``overwrite`` or ``resume``
        (``pipeline.prediction_journal``)."""
        out = Path(output_dir)
        items = (discover_inputs(inputs, exclude=out, frame=self.frame) if isinstance(inputs, (str, os.PathLike))
                 else list(inputs))
        described = str(inputs) if isinstance(inputs, (str, os.PathLike)) else f"{len(items)} inputs"
        journal = PredictionJournal(out, overwrite=overwrite, resume=resume,
                                    description={"bundle": "; ".join(map(str, self.roots)),
                                                 "input": text(described)})
        try:
            return self._predict_all(items, out, journal)
        finally:
            journal.close()

    def _predict_all(self, items: list[InputItem], out: Path, journal: PredictionJournal) -> PredictionResult:
        from tqdm.auto import tqdm

        rows: dict[int, dict[str, Any]] = {}
        pending: list[tuple[int, Case, int, torch.Tensor]] = []
        states: dict[int, dict[str, Any]] = {}

        def fail(index: int, item: InputItem, error: Exception | str) -> None:
            rows[index] = error_row(item, self.classes, error)
            journal.record(rows[index])
            states.pop(index, None)

        def flush(final: bool) -> None:
            while pending:
                first_shape = tuple(pending[0][3].shape)
                take = [p for p in pending if tuple(p[3].shape) == first_shape][: self.batch_size]
                if not final and len(take) < self.batch_size and not self.native:
                    return  # wait for a full batch
                for p in take:
                    pending.remove(p)
                live = [p for p in take if p[0] in states]
                if not live:
                    continue
                try:
                    lesion, classes = self._forward(torch.stack([p[3] for p in live]))
                except Exception as e:  # keep going with the other inputs
                    for p in live:
                        fail(p[0], p[1].item, f"inference failed ({type(e).__name__}: {e})")
                    continue
                for j, (index, case, k, _) in enumerate(live):
                    if index not in states:
                        continue
                    try:
                        size = tuple(case.display[k].shape[-2:])
                        states[index]["results"][k] = self._postprocess(lesion[j], classes[j], size,
                                                                        states[index]["operations"][k])
                        if all(r is not None for r in states[index]["results"]):
                            rows[index] = self._finish(case, states.pop(index), out)
                            journal.record(rows[index])
                    except Exception as e:
                        fail(index, case.item, e)

        bar = tqdm(total=len(items), unit="input", disable=not self.progress, desc="predict")
        for index, item in enumerate(items):
            key = PredictionJournal.key(text(item.shown), item.frame)
            if key in journal.done:   # --resume: predicted by the interrupted run
                rows[index] = {**base_row(item, self.classes), **journal.done[key]}
                bar.update(1)
                continue
            if item.kind == "mask":   # listed, not predicted
                rows[index] = {**base_row(item, self.classes), "status": "skipped", "error": item.problem}
                journal.record(rows[index])
                bar.update(1)
                continue
            try:
                case = self._load(item)
                tensors, operations = zip(*[self.preprocess(s) for s in case.slices])
                for t in tensors:
                    if not torch.isfinite(t).all():
                        raise DataError(item.path, "non-finite values after preprocessing")
            except Exception as e:
                fail(index, item, e)
                bar.update(1)
                continue
            states[index] = {"results": [None] * len(tensors), "tensors": tensors if self.explain else None,
                             "operations": operations}
            pending.extend((index, case, k, t) for k, t in enumerate(tensors))
            flush(final=False)
            bar.update(1)
        flush(final=True)
        bar.close()
        return journal.finish(lambda table: write_table(table, out, self.classes, self.runtime, str(self.device)),
                              [rows[i] for i in sorted(rows)])

    # --- outputs
    def _finish(self, case: Case, state: dict[str, Any], out: Path) -> dict[str, Any]:
        """An input's row once all its slices are predicted, with its mask, overlay and heatmap written
        (``write_case_files``: all or none, so an error row never has a mask beside it)."""
        summary = CaseSummary.from_slices(state["results"], self.cls_threshold)
        row = case_row(case.item, self.classes, summary, case.spacing, case.thickness, self.confidence_margin,
                       case.spacing_problem)
        # at the size the heatmap is drawn, not the input's: a full-size float map of a huge input is large
        heat = (lambda: resize_to(self.gradcam(state["tensors"][summary.best], summary.predicted),
                                  capped_size(case.display[summary.best].shape[-2:]))) if self.explain else None
        row.update(write_case_files(case, summary, out, self.classes, self.overlays, heat))
        return row


def predict(
    bundle: str | os.PathLike | Sequence[str | os.PathLike],
    input: str | os.PathLike,
    output_dir: str | os.PathLike,
    runtime: str = "auto",
    device: str | None = "auto",
    batch_size: int | None = None,
    threshold: float | None = None,
    refine: bool | None = None,
    explain: bool | None = None,
    overlays: bool | None = None,
    native_resolution: bool | None = None,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    max_pixels: int | None = MAX_PIXELS,
    **options: Any,
) -> PredictionResult:
    """Predict every image under ``input`` with the exported ``bundle`` (several: their average, a fold ensemble)
    and write masks, overlays, heatmaps and
    ``predictions.csv`` into ``output_dir`` (see the module docstring and ``Predictor`` for the options).
    ``output_dir`` holding an earlier run is refused unless ``overwrite`` (start again) or ``resume`` (finish an
    interrupted run, skipping the inputs it predicted). An input whose images (a volume's slices) have more than
    ``max_pixels`` pixels (None: no limit) gets an error row naming the limit.

    Returns:
        a ``PredictionResult``; its ``exit_code``: 0 when every input was predicted, 3 when some failed, 1 when
        none was predicted.

    Raises:
        FileNotFoundError: the input or the bundle's model is missing; not an exported bundle.
        FileExistsError: ``output_dir`` holds an earlier run and neither ``overwrite`` nor ``resume`` is given.
        pipeline.data.io.DataError: an incomplete exported bundle, a truncated or corrupt model file.
        ValueError: bad options; ``output_dir`` is the input folder or a folder above it.
    """
    if not str(input):
        raise ValueError("no input given (--input / --input_dir)")
    # refused before the models are loaded (a missing input is discovery's to name)
    check_output_folder(output_dir, input if Path(input).exists() else None, overwrite=overwrite, resume=resume)
    predictor = Predictor(bundle, runtime=runtime, device=device, batch_size=batch_size, threshold=threshold,
                          refine=refine, explain=explain, overlays=overlays, native_resolution=native_resolution,
                          max_pixels=max_pixels, progress=progress, **options)
    return predictor(input, output_dir, overwrite=overwrite, resume=resume)
