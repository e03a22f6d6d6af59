"""A registry of multi-task networks: ``register_network``, ``create_network``, ``list_networks``.

Modelled on timm's registry so that every network is reachable by name from configs and from the CLI, and one test
parametrized over ``list_networks()`` covers a network the day it is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["NetworkInfo", "register_network", "create_network", "list_networks", "network_info"]


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    builder: Callable[..., nn.Module]
    paper: str
    tasks: tuple[str, ...] = ("seg", "cls")  # the heads the network learns; single-task baselines learn one


_REGISTRY: dict[str, NetworkInfo] = {}


def register_network(
    name: str, paper: str = "", tasks: tuple[str, ...] = ("seg", "cls")
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class or function decorator that registers a network builder under ``name``.

    Args:
        name: registry name, unique.
        paper: short reference of the method the network implements.
        tasks: the heads the network learns, ``"seg"`` and/or ``"cls"``. Every network returns both heads; a
            single-task baseline returns a constant for the other one (reports leave that task blank).

    Raises:
        ValueError: when ``name`` is already registered or ``tasks`` is empty or unknown.
    """
    if not tasks or not set(tasks) <= {"seg", "cls"}:
        raise ValueError(f"tasks must be a non-empty subset of ('seg', 'cls'), got {tasks!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"network name {name!r} is already registered by {_REGISTRY[name].builder!r}")
        _REGISTRY[name] = NetworkInfo(name=name, builder=builder, paper=paper, tasks=tuple(tasks))
        return builder

    return decorator


def _load_builtin() -> None:
    # importing the package registers every built-in network
    import pipeline.networks  # noqa: F401


def list_networks() -> list[str]:
    """Names of the registered networks, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def network_info(name: str) -> NetworkInfo:
    """The registry entry of ``name``.

    Raises:
        KeyError: unknown name; the message lists the registered names.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown network {name!r}; registered networks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_network(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered network ``name`` with ``kwargs``.

    Raises:
        KeyError: unknown name; the message lists the registered names.
    """
    return network_info(name).builder(**kwargs)
