"""Where the project's configuration files are: the presets (``configs/``) and the MONAI bundles (``bundles/``).

In a checkout (and an editable install) they are the repository's own folders. A regular install (``pip install .``
or a wheel) copies them as data files to ``<prefix>/share/breast-mtl/`` (``[options.data_files]`` in ``setup.cfg``):
MONAI bundles are folders of YAML files run by ``python -m monai.bundle``, not Python modules, so they are installed
as files, not as package data inside ``pipeline``.
"""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

__all__ = ["SHARE", "resource_dir"]

SHARE = Path("share") / "breast-mtl"
_CHECKOUT = Path(__file__).resolve().parents[1]


def _prefixes() -> list[Path]:
    """Installation prefixes to look in: the interpreter's (a venv's), the base one and the user's."""
    found = [Path(sysconfig.get_path("data")), Path(sys.prefix), Path(sys.base_prefix)]
    user = getattr(site, "USER_BASE", None)
    if user:
        found.append(Path(user))
    return list(dict.fromkeys(found))


def resource_dir(name: str) -> Path:
    """The folder ``name`` (``"configs"`` or ``"bundles"``): the checkout's, else the installed data files'.

    Raises:
        FileNotFoundError: neither exists (the message lists where it looked).
    """
    candidates = [_CHECKOUT / name] + [prefix / SHARE / name for prefix in _prefixes()]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"the project's {name}/ folder was not found (looked in: "
                            f"{', '.join(map(str, candidates))}); reinstall the package (`pip install .`)")
