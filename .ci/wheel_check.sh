#!/usr/bin/env bash
# A regular (non-editable) install finds its presets and bundles: build the wheel, install it without dependencies
# into a fresh venv that borrows the dependencies of .venv (a .pth line, so nothing is downloaded and torch stays the
# CPU build), and run `bmtl demo` from a folder outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python -m pip install --quiet "setuptools>=68"   # the build backend (pyproject.toml), usually there
# setuptools builds in ./build and keeps what an earlier build put there: modules since moved (pipeline/cli.py before
# the cli/ package) would ship beside their replacements
rm -rf build
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/dist" .
# the wheel holds exactly the package's modules in the source tree, nothing left over from an earlier build
.venv/bin/python -c "import sys, zipfile; print(*sorted(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.startswith('pipeline/') and n.endswith('.py')), sep='\n')" "$WORK"/dist/*.whl > "$WORK/wheel_modules.txt"
find pipeline -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort | diff - "$WORK/wheel_modules.txt"
"$ROOT/.venv/bin/python" -m venv "$WORK/venv"   # the same interpreter as the borrowed dependencies
SITE=$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
"$ROOT/.venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))" > "$SITE/borrowed_dependencies.pth"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps --no-index "$WORK"/dist/*.whl
cd "$WORK"
"$WORK/venv/bin/python" - <<'PY'
import pipeline, pipeline.resources as r
from pathlib import Path
assert "venv" in pipeline.__file__, f"the checkout was imported, not the wheel: {pipeline.__file__}"
for name in ("configs", "bundles"):
    where = r.resource_dir(name)
    assert Path(where).is_relative_to(Path(__import__("sys").prefix)), where
    print(name, "->", where)
# a preset is a config fragment of the installed configs/, merged after the installed bundle's files
from pipeline.workflows import bundle_config_files
files, _ = bundle_config_files(r.resource_dir("bundles") / "breast_us_mtl", "training", {"preset": "mtl_oca"})
assert Path(files[-1]) == r.resource_dir("configs").resolve() / "mtl_oca.yaml", files
print("preset mtl_oca ->", files[-1])
PY
"$WORK/venv/bin/bmtl" demo --output "$WORK/demo" > "$WORK/demo.log" 2>&1 || { tail -40 "$WORK/demo.log"; exit 1; }
# the demo ends by naming the model card, the HTML report and the MLflow model: each named file exists
"$WORK/venv/bin/python" - "$WORK/demo.log" <<'PY'
import re, sys
from pathlib import Path
text = Path(sys.argv[1]).read_text()
for label in ("model card", "HTML report"):
    found = re.findall(rf"^{label} +: (\S+)", text, flags=re.M)
    assert found and all(Path(p).is_file() for p in found), f"demo output: {label}: {found}"
assert re.search(r"^MLflow model +: runs:/\w+/\S+ \(store sqlite:///", text, flags=re.M), "demo output: no MLflow model"
assert (Path(re.search(r"^checkpoints +: (\S+)", text, flags=re.M)[1]).parent / "train.log").stat().st_size > 0
print("demo output names the model card, the HTML report, the MLflow model and the run's logs")
PY
tail -8 "$WORK/demo.log"
echo "wheel check: ok"
