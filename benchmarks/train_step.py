"""Train-step time of every registered network: forward + backward + Adam step on a (batch, 1, size, size) batch.

    python benchmarks/train_step.py --size 128 --batch 16 --repeats 3

Prints a Markdown table (median of ``repeats`` steps after one warm-up step) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from pipeline.keys import Head
from pipeline.losses import MultiTaskLoss, make_cls_loss, make_seg_loss
from pipeline.networks.table import count_parameters
from pipeline.registry import create_network, list_networks


def step_seconds(name: str, size: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    net = create_network(name).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = MultiTaskLoss(make_seg_loss(), make_cls_loss())
    x = torch.randn(batch, 1, size, size)
    target = {Head.SEG.value: (torch.rand(batch, 1, size, size) > 0.8).float(),
              Head.CLS.value: torch.randint(0, 2, (batch,))}
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn(net(x), target).backward()
        opt.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--networks", nargs="*", default=None)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"| network | parameters | train step s ({args.batch}x{args.size}²) | img/s |")
    print("|---|---:|---:|---:|")
    for name in args.networks or list_networks():
        seconds = step_seconds(name, args.size, args.batch, args.repeats)
        params = count_parameters(create_network(name))
        print(f"| {name} | {params:,} | {seconds:.2f} | {args.batch / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
