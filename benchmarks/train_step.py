"""Train-step time of every registered network, as its preset trains it: forward + joint loss + backward + AdamW
step on a random (batch, 1, size, size) batch (``bench.train_images_per_second``; circle training included).

    python benchmarks/train_step.py --size 128 --batch 16 --repeats 3 [--channels-last] [--bf16]
    python benchmarks/train_step.py --bf16-compare --networks nmtnet segresnet_shared   # float32 vs bfloat16

Prints a Markdown table (median of ``repeats`` steps after one warm-up step) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (  # noqa: E402
    bf16_train_images_per_second,
    build_preset_network,
    hardware_summary,
    train_images_per_second,
)
from pipeline.networks.table import count_parameters  # noqa: E402
from pipeline.registry import list_networks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true", help="network and input in channels_last format")
    parser.add_argument("--bf16", action="store_true", help="the forward pass under CPU bfloat16 autocast")
    parser.add_argument("--bf16-compare", action="store_true",
                        help="float32 and bfloat16 (channels_last) in alternating rounds, with the speed-up")
    parser.add_argument("--networks", nargs="*", default=None, help="presets (default: every registered network)")
    args = parser.parse_args()
    if args.bf16_compare:
        print(f"machine: {hardware_summary()}; channels_last, float32 and bfloat16 in alternating rounds")
        print(f"| network | float32 img/s | bfloat16 img/s | speed-up ({args.batch}x{args.size}²) |")
        print("|---|---:|---:|---:|")
        for name in args.networks or list_networks():
            fp32, bf16 = bf16_train_images_per_second(name, size=args.size, batch=args.batch)
            print(f"| {name} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |", flush=True)
        return
    print(f"machine: {hardware_summary()}; channels_last={args.channels_last}, bf16={args.bf16}")
    print(f"| network | parameters | train step s ({args.batch}x{args.size}²) | img/s |")
    print("|---|---:|---:|---:|")
    for name in args.networks or list_networks():
        ips = train_images_per_second(name, size=args.size, batch=args.batch, steps=args.repeats,
                                      channels_last=args.channels_last, bf16=args.bf16)
        params = count_parameters(build_preset_network(name))
        print(f"| {name} | {params:,} | {args.batch / ips:.2f} | {ips:.1f} |", flush=True)


if __name__ == "__main__":
    main()
