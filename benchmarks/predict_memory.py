"""Peak memory of ``bmtl predict`` on one large image (a benchmark script, not a test).

For each ``--sizes`` N, writes an N x N grey PNG (a smooth gradient with a bright blob: PNG compresses it, so the
file is small and the cost is the decoded image), runs ``bmtl predict`` on it with an exported bundle in a child
process (overlays on, the default) and reports the child's peak resident memory (``getrusage`` of the finished
child) and its wall time. Each size runs in its own process, so the figures do not add up.

    python benchmarks/predict_memory.py --bundle demo_output/exported/breast_us_mtl --sizes 1000 4000 8000
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_image(path: Path, size: int) -> None:
    """An N x N 8-bit grey PNG, written row block by row block into one array (8000 x 8000 is 64 MB)."""
    image = np.empty((size, size), np.uint8)
    columns = np.arange(size, dtype=np.float32)
    for start in range(0, size, 1024):
        rows = np.arange(start, min(start + 1024, size), dtype=np.float32)[:, None]
        block = 40 + 120 * (rows + columns) / (2 * size)
        blob = ((rows - size / 2) ** 2 + (columns - size / 2) ** 2) < (size / 8) ** 2
        image[start:start + len(rows)] = np.where(blob, 220, block).astype(np.uint8)
    Image.fromarray(image).save(path, compress_level=1)


def peak_of_predict(bundle: Path, size: int, work: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit code) of ``bmtl predict`` on one ``size`` x ``size`` PNG."""
    folder = work / f"in_{size}"
    folder.mkdir()
    write_image(folder / f"scan_{size}.png", size)
    cmd = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))", "predict",
           "--bundle", str(bundle), "--input", str(folder), "--output", str(work / f"out_{size}"), "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # KB on Linux: the largest child so far
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    if peak <= before:
        print(f"warning: size {size} did not raise the children's peak ({before} KB): run sizes in increasing order",
              file=sys.stderr)
    return peak / 1024, seconds, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path, help="an exported bundle (bmtl export, make demo)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 8000],
                        help="image sides, in increasing order (the children's peak only grows)")
    args = parser.parse_args(argv)
    print(f"# bmtl predict peak memory: {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}, bundle {args.bundle}")
    print("| image | pixels | peak RSS MB | wall s | exit |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sorted(args.sizes):
            peak, seconds, rc = peak_of_predict(args.bundle.resolve(), size, Path(tmp))
            print(f"| {size} x {size} PNG | {size * size:,} | {peak:.0f} | {seconds:.1f} | {rc} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
