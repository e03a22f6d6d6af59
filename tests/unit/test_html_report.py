"""The evaluation's HTML page: self-contained, every section present, file names shown as text."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.html_report import REPORT_FILE, write_html_report


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections, self.images, self.scripts, self.text = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def _evaluation(root):
    eval_dir = root / "run" / "eval_test"
    eval_dir.mkdir(parents=True)
    summary = {"n_images": 2, "classes": ["benign", "malignant"],
               "segmentation": {"dice": {"mean": 0.8123, "ci95": [0.7, 0.9]}, "jaccard": {"mean": 0.7, "ci95": None},
                                "hd95": {"mean": None, "unit": "pixels"}},
               "classification": {"auc": 0.9345, "ci95": {"auc": [0.81, 0.99]}, "operating_threshold": 0.42,
                                  "accuracy": 0.5}}
    (eval_dir / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame([{"id": "a", "true_class": "benign", "pred_class": "benign", "dice": 0.9, "file": "a.png"},
                  {"id": "b", "true_class": "malignant", "pred_class": "benign", "dice": 0.1,
                   "file": "<script>alert(1)</script>.png"}]).to_csv(eval_dir / "per_image.csv", index=False)
    for name in ("roc.png", "confusion_matrix.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(eval_dir / name)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(eval_dir.parent / "learning_curves.png")
    (eval_dir.parent / "run_config.json").write_text(json.dumps({"preset": "nmtnet", "image_size": [128, 128]}))
    return eval_dir


def test_the_page_holds_the_metrics_the_plots_and_the_worst_cases(tmp_path):
    eval_dir = _evaluation(tmp_path)
    path = write_html_report(eval_dir)
    assert path == eval_dir / REPORT_FILE
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert page.sections == ["metrics", "model", "learning-curves", "roc", "confusion", "worst"]
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    text = " ".join(page.text)
    assert "0.812" in text and "0.700 to 0.900" in text and "0.934" in text and "0.810 to 0.990" in text
    assert "operating threshold 0.420" in text and "nmtnet" in text
    assert page.scripts == 0 and "<script>alert(1)</script>.png" in text   # a file name is text, never markup
    worst = text.index("<script>alert(1)</script>.png") < text.index("a.png")
    assert worst   # lowest Dice first


def test_no_summary_no_page(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.json"):
        write_html_report(tmp_path)


def test_the_datasets_page_has_one_row_per_dataset_with_cis_and_links_to_existing_reports(tmp_path):
    from pipeline.html_report import write_datasets_report

    (tmp_path / "eval_test").mkdir()
    (tmp_path / "eval_test" / REPORT_FILE).write_text("<html></html>")
    table = pd.DataFrame([
        {"evaluation": "test", "images": 40, "left_out": 0, "dice": 0.81234, "dice_ci_low": 0.7, "dice_ci_high": 0.9,
         "auc": 0.9, "auc_ci_low": 0.8, "auc_ci_high": 0.97},
        {"evaluation": "external_busi_all", "images": 12, "left_out": 3, "dice": 0.6, "dice_ci_low": None,
         "dice_ci_high": None, "auc": None, "auc_ci_low": None, "auc_ci_high": None},
    ])
    path = write_datasets_report(tmp_path, "run <1>", table, "all")
    assert path == tmp_path / "datasets_all.html"
    text = path.read_text()
    page = _Page()
    page.feed(text)
    assert page.sections == ["datasets"] and page.scripts == 0
    assert "0.812 (0.700 to 0.900)" in page.text and "external_busi_all" in page.text and "n/a" in page.text
    assert text.count("<tr>") == 3   # the header and one row per dataset
    # a link only where the evaluation's own page exists; the title is escaped
    assert "href='eval_test/report.html'" in text and "eval_external_busi_all" not in text
    assert "run &lt;1&gt;" in text
