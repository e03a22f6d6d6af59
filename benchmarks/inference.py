"""Inference latency of the default network per runtime (a benchmark script, not a test).

Per-image latency (batch 1; median of ``--repeats`` timed calls after ``--warmup`` untimed ones, ``--threads``
intra-op threads) of the default network (``segresnet_effnet`` at its preset width, untrained weights: latency does
not depend on them) for

* eager PyTorch, eager with ``channels_last``, TorchScript (traced ``ExportWrapper``) and ONNX Runtime at
  ``--size`` x ``--size`` (256), one forward pass;
* sliding-window inference on a ``--sw-size`` image (512) with training-size tiles (``MultiTaskInferer``: seg by
  sliding window over ``--size`` tiles with 25 % overlap, cls on the whole image resized), for eager, TorchScript and
  ONNX Runtime.

Prints the machine (CPU model, threads, load average: other processes on the machine slow the numbers down), the
versions and a Markdown table.

    python benchmarks/inference.py                       # defaults: 256, 512, 2 threads, 20 repeats
    python benchmarks/inference.py --size 128 --sw-size 256 --repeats 10 --network segresnet_shared
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.engines import MultiTaskInferer  # noqa: E402
from pipeline.export import ExportWrapper, OnnxModel, export_onnx, export_torchscript, load_torchscript  # noqa: E402
from pipeline.keys import Head  # noqa: E402
from pipeline.presets import load_preset  # noqa: E402
from pipeline.registry import create_network  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_it(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def as_dict(model: Callable) -> Callable[[torch.Tensor], dict]:
    def call(x: torch.Tensor) -> dict:
        seg, cls = model(x)
        return {Head.SEG.value: seg, Head.CLS.value: cls}

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="segresnet_effnet", help="preset name (default segresnet_effnet)")
    parser.add_argument("--size", type=int, default=256, help="input and tile size (default 256)")
    parser.add_argument("--sw-size", type=int, default=512, help="sliding-window image size (default 512)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row (default 20)")
    parser.add_argument("--sw-repeats", type=int, default=5, help="timed sliding-window calls (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--classes", type=int, default=3, help="number of classes (default 3)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    preset = load_preset(args.network)
    torch.manual_seed(0)
    net = create_network(preset["network_name"], **{**preset["network_kwargs"], "in_channels": 1,
                                                    "num_classes": args.classes})
    wrapper = ExportWrapper(net).eval()
    size = (args.size, args.size)
    x = torch.rand(1, 1, *size)
    big = torch.rand(1, 1, args.sw_size, args.sw_size)

    with tempfile.TemporaryDirectory() as tmp:
        inputs = {"random": x}
        export_torchscript(wrapper, Path(tmp) / "model.ts", inputs)
        export_onnx(wrapper, Path(tmp) / "model.onnx", inputs)
        scripted = load_torchscript(Path(tmp) / "model.ts")
        onnx = OnnxModel(Path(tmp) / "model.onnx", threads=args.threads)
        channels_last = ExportWrapper(net).eval().to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        inferer = MultiTaskInferer(roi_size=size, sw_batch_size=4, overlap=0.25)

        rows = []
        with torch.inference_mode():
            cases = [
                ("eager", f"{args.size}²", lambda: wrapper(x), args.repeats),
                ("eager channels_last", f"{args.size}²", lambda: channels_last(x_cl), args.repeats),
                ("TorchScript", f"{args.size}²", lambda: scripted(x), args.repeats),
                ("ONNX Runtime", f"{args.size}²", lambda: onnx(x), args.repeats),
                ("eager, sliding window", f"{args.sw_size}² ({args.size}² tiles)",
                 lambda: inferer(big, as_dict(wrapper)), args.sw_repeats),
                ("TorchScript, sliding window", f"{args.sw_size}² ({args.size}² tiles)",
                 lambda: inferer(big, as_dict(scripted)), args.sw_repeats),
                ("ONNX Runtime, sliding window", f"{args.sw_size}² ({args.size}² tiles)",
                 lambda: inferer(big, as_dict(onnx)), args.sw_repeats),
            ]
            for name, shape, fn, repeats in cases:
                times = time_it(fn, args.warmup, repeats)
                rows.append((name, shape, statistics.median(times), min(times), max(times), repeats))
                print(f"  {name}: {statistics.median(times):.1f} ms", file=sys.stderr)

    import monai
    import onnxruntime

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?", "?", "?")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {args.threads} threads used; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)")
    print(f"versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, monai {monai.__version__}, "
          f"python {platform.python_version()}")
    n_params = sum(p.numel() for p in net.parameters())
    print(f"network: {args.network} ({preset['network_kwargs']}), {n_params / 1e6:.2f} M parameters, batch 1, "
          f"median of N timed calls after {args.warmup} warm-up calls\n")
    baseline = rows[0][2]
    print("| runtime | input | median ms/image | min ms | max ms | N | vs eager |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, shape, median, low, high, repeats in rows:
        ratio = f"{baseline / median:.2f}x" if "sliding" not in name else ""
        print(f"| {name} | {shape} | {median:.1f} | {low:.1f} | {high:.1f} | {repeats} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
