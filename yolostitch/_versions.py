"""The dependency versions yolostitch needs, checked once at import (setup.py declares the same).

* torch >= 2.6: ``weights_only`` loading, which keeps code out of checkpoints, had a known flaw before 2.6
  (CVE-2025-32434); the code also uses ``torch.serialization.safe_globals`` (2.5) and ``torch.amp.GradScaler``
  (2.3). An older torch is refused.
* ultralytics == 8.4.190: yolostitch builds on its internals (Conv and the other blocks, the augmentations,
  ModelEMA), which move between releases. Another version gets one warning line naming the one needed.
"""

from __future__ import annotations

import logging
import re

LOGGER = logging.getLogger("yolostitch")
TORCH_MIN = (2, 6)
TORCHVISION_MIN = (0, 21)  # the torchvision of torch 2.6
ULTRALYTICS = "8.4.190"


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``'2.6.0+cu124'`` -> ``(2, 6, 0)``; ``()`` if it has none."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    return tuple(int(part) for part in m.group(1).split(".")) if m else ()


def check_torch(version: str) -> None:
    """Raise ImportError (one line, both versions named) for a torch older than :data:`TORCH_MIN`."""
    if release(version)[:2] < TORCH_MIN:
        need = ".".join(map(str, TORCH_MIN))
        raise ImportError(f"yolostitch needs torch>={need}, but torch {version} is installed (weights_only "
                          f"checkpoint loading is unsafe before {need}, CVE-2025-32434): pip install "
                          f"'torch>={need}' 'torchvision>={'.'.join(map(str, TORCHVISION_MIN))}'")


def ultralytics_mismatch(installed: str | None) -> str | None:
    """The one line to show when the installed ultralytics is not the one yolostitch is built on, else None."""
    if installed == ULTRALYTICS:
        return None
    have = f"ultralytics {installed} is installed" if installed else "ultralytics is not installed"
    return (f"yolostitch needs ultralytics=={ULTRALYTICS} (it builds on its internals), but {have}: "
            f"pip install ultralytics=={ULTRALYTICS}")


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, from its metadata (no import), or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
