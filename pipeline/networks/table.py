"""``bmtl networks``: the registered networks with their paper, size and speed."""

from __future__ import annotations

import time

import torch

from pipeline.registry import create_network, list_networks, network_info

__all__ = ["count_parameters", "forward_time", "network_table"]


def count_parameters(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


@torch.no_grad()
def forward_time(network: torch.nn.Module, size: int = 128, batch: int = 1, repeats: int = 5) -> float:
    """Median seconds of an eval-mode forward pass on a ``(batch, C, size, size)`` input, after one warm-up."""
    network.eval()
    in_channels = getattr(network, "in_channels", 1)
    x = torch.randn(batch, in_channels, size, size)
    network(x)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        network(x)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def network_table(size: int = 128, repeats: int = 5) -> str:
    """Markdown table: name, paper, parameters (default settings), forward ms per image at ``size``²."""
    rows = [f"| network | paper | parameters | forward ms @ {size}² (batch 1, {torch.get_num_threads()} threads) |",
            "|---|---|---:|---:|"]
    for name in list_networks():
        network = create_network(name)
        ms = forward_time(network, size=size, repeats=repeats) * 1000
        rows.append(f"| {name} | {network_info(name).paper} | {count_parameters(network):,} | {ms:.1f} |")
    return "\n".join(rows)
