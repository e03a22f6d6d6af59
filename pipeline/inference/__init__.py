"""Inference with an exported bundle on new images: ``bmtl predict`` and the bundles' ``inferring`` run id.

One concern per module: ``discovery`` (the inputs under a path), ``loaders`` (reading each input into 2D slices),
``runtimes`` (an exported bundle opened, its PyTorch / TorchScript / ONNX model loaded), ``ensemble`` (fold ensembles:
members checked, probabilities averaged), ``predictor`` (preprocessing, batched inference, mask and class),
``table`` (``predictions.csv``: its rows and the exit code), ``explain`` (Grad-CAM) and ``outputs`` (masks, overlays,
heatmaps).

``predict(bundle, input, output_dir)`` reads one file or a folder (recursively), predicts every image with the
bundle's model (or with several bundles' models, e.g. one per cross-validation fold: a fold ensemble averaging their
lesion and class probabilities; ``tta="flip"`` averages the left-right flipped image in) and writes, in
``output_dir``:

* ``masks/<name>_mask.png`` for 2D raster and single-file DICOM inputs: the lesion mask at the input's own size and
  orientation (rows and columns as the file is displayed), 8-bit, **0 = background, 255 = lesion** (for viewing;
  divide by 255 for 0/1);
* ``masks/<name>_mask.nii.gz`` for NIfTI inputs (2D or 3D) with the input's affine and header (uint8 0/1), and for
  DICOM series folders with the series' patient geometry (RAS affine, array axes: columns, rows, slices);
* ``overlays/<name>_overlay.png``: the image with the predicted contour, the class and its probability (for a volume,
  the slice with the largest lesion, in radiological view for axial slices);
* ``heatmaps/<name>_gradcam.png`` with ``explain=True``: Grad-CAM of the classification head (``monai.visualize``)
  for the predicted class, blended over the image, with a colour bar and a title naming the class;
* ``predictions.csv``: one row per input (see ``CSV_COLUMNS``): class, ``low_confidence`` (the class probability
  within ``confidence_margin`` of the decision: ``pipeline.metrics.decision_margin``), per-class probabilities,
  lesion area in pixels and in mm² where the spacing is known (DICOM ``PixelSpacing`` or ultrasound region
  calibration, NIfTI affine; never for PNG/JPEG; ``spacing_note`` says why not when the file's spacing could not be
  read), whether refinement changed anything (on by default when the
  classes include "normal"), the error for an input that failed. The ``file`` column is the input's path relative to
  ``input`` (its name for a single file), ``mask``/``overlay``/``heatmap`` are relative to ``output_dir``
  (``PredictionResult.path`` joins them), so both folders can be moved.

Inputs: PNG/JPEG/BMP/TIFF; DICOM single files (ultrasound, often RGB or YBR, JPEG/RLE-compressed as pydicom's pixel-data
plugins decode them; MONOCHROME1 inverted; a multi-frame file such as a cine loop is one input per frame, ``frame``
column, ``<name>_frameNNN_mask.png``) and series folders (one series per folder, read by
``pipeline.data.dicom_series.read_dicom_series``); NIfTI ``.nii``/``.nii.gz``, 2D or 3D (4D is refused); 3D NRRD
``.nrrd``/``.nhdr`` (``pipeline.data.volume.read_nrrd_volume``; masks written as NRRD with the input's space, directions
and origin); 3D MetaImage ``.mha``/``.mhd`` (``read_metaimage_volume``, the ``itk`` extra; masks written as ``.mha`` by
MONAI's ``ITKWriter`` with the input's geometry). A 3D volume is brought to its closest RAS orientation, normalised per
volume like ``bmtl prepare`` does for the MRI bundle (1st-99th percentile; MRI bundle only, and not for inputs already
within [0, 1], i.e. prepared slices), cut into slices along ``slice_axis`` (2: axial), predicted slice by slice and
reassembled into a 3D mask in the input's own voxel order. Its class is the mean of the probabilities of the slices with
lesion pixels (all slices when none has any).

Preprocessing is the bundle's own ``preprocessing_transforms`` (from ``configs/common.yaml``) without its file
reader: the same grey conversion, intensity scaling, resizing to the training size and extra channels as in training.
By default the mask is predicted at the training size and the lesion probability brought back to the input's size by
MONAI's inverse of the preprocessing's resize (and padding, with ``keep_aspect``), as evaluation's ``Invertd`` does,
then thresholded: our bundles train on whole images resized to the training size. With
``native_resolution=True`` the image is not resized: ``MultiTaskInferer`` segments it by sliding window over
training-size tiles at its own pixel scale (for images whose pixel scale matches the training images) and classifies
the whole image resized to the training size.

A bad input (unreadable or truncated file, unsupported type, empty or 1-pixel image, 4D volume, DICOM without pixel
data, a DICOM object that is not an image (dose, segmentation, structure set, MOSAIC), a malformed header value, NaN
pixels) gives a row with ``status=error`` and the problem in ``error``; every other input is processed.
``PredictionResult.exit_code`` is 0 when every input was predicted, 3 when some failed and 1 when none was
predicted. In a folder, files named like masks (``*_mask.*``) are listed with ``status=skipped``, not predicted.

Nothing here reads a training config, a datalist or a checkpoint with pickled objects: the exported bundle folder
is enough (``torch.load(weights_only=True)`` for ``model.pt``).
"""

from pipeline.inference.discovery import InputItem, discover_inputs, image_inputs
from pipeline.inference.predictor import Predictor, predict, unlabelled
from pipeline.inference.runtimes import MODEL_FILES, RUNTIMES
from pipeline.inference.table import CSV_COLUMNS, EXIT_CODES, PredictionResult

__all__ = [
    "RUNTIMES",
    "MODEL_FILES",
    "CSV_COLUMNS",
    "EXIT_CODES",
    "InputItem",
    "PredictionResult",
    "Predictor",
    "discover_inputs",
    "image_inputs",
    "predict",
    "unlabelled",
]
