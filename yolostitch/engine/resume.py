"""What ``--resume`` takes from a checkpoint: its training state and options, never where to write nor code to run.

A resumed run writes into the run folder that holds the ``last.pt`` being resumed (``RUN/weights/last.pt``), as
stock reads ``RUN/opt.yaml`` from there: the ``save_dir``, ``project`` and ``name`` a checkpoint records are not
used to write. Its options are checked field by field against the training options. A ``torchscript:`` or
``module:function`` extractor it records is run only if the user names it again with ``--extractor``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from ..errors import FlagError, WeightsError
from ..weights import read_checkpoint
from ..weights.checkpoint import is_own_checkpoint
from .features import recorded_extractor_spec


def run_folder(last: str | Path) -> Path:
    """The run folder of the checkpoint ``last`` (``RUN/weights/last.pt`` -> ``RUN``): where a resumed run writes."""
    last = Path(last)
    if not last.is_file():
        raise FlagError(f"--resume {last}: no such file (give a run's RUN/weights/last.pt, or --resume alone for "
                        "the most recent run)")
    if last.parent.name != "weights":
        raise FlagError(f"--resume {last}: expected a checkpoint in a run's weights folder (RUN/weights/last.pt), "
                        f"the run then goes on in RUN; this one is in {last.parent}")
    return last.parent.parent


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint ``--resume`` goes on from, read by the one checkpoint reader (:func:`..weights.read_checkpoint`:
    tensors and plain types only); a file without training state is an error naming it."""
    ckpt = read_checkpoint(path)
    if not is_own_checkpoint(ckpt) or "train_state" not in ckpt:
        raise WeightsError(f"--resume {path}: not a yolostitch training checkpoint (no optimizer state)")
    return ckpt


def resume_options(recorded: Any, given: Any, last: str | Path) -> dict[str, Any]:
    """Keyword arguments of the resumed run's options (a dataclass like ``given``).

    ``recorded`` is the checkpoint's ``opt``; ``given`` the options the user started ``--resume`` with, of which
    only ``--extractor``/``--extractor-weights`` count. Paths to write come from ``last``'s place, not the file.
    """
    last = Path(last)
    options = _checked(recorded, given, last)
    folder = run_folder(last)
    options.update(resume=str(last), project=str(folder.parent), name=folder.name, exist_ok=True)
    before = options.get("extractor") or ""
    if given.extractor:  # the user's own choice, code kinds included; the trained weights hash is still checked
        if not before:
            source = f"the cache {options['features']}" if options.get("features") else "images"
            raise FlagError(f"--extractor {given.extractor}: the run {last} resumes did not use an extractor "
                            f"(it trained on {source})")
        recorded_weights = options.get("extractor_weights", "") if given.extractor == before else ""
        options.update(extractor=given.extractor, extractor_weights=given.extractor_weights or recorded_weights)
    elif before:
        recorded_extractor_spec(before, str(last))  # a built-in kind, else an error naming --extractor
    return options


def recorded_hash(ckpt: Mapping[str, Any]) -> str | None:
    """The weights hash of the extractor a checkpoint was trained with, if it records one."""
    record = ckpt.get("features") or {}
    value = record.get("weights_hash") if isinstance(record, Mapping) else None
    return value if isinstance(value, str) and value else None


def _checked(recorded: Any, given: Any, last: Path) -> dict[str, Any]:
    """``recorded`` with every key a field of ``given``'s class and every value of that field's type."""
    if not isinstance(recorded, Mapping):
        raise WeightsError(f"--resume {last}: its 'opt' is a {type(recorded).__name__}, not a mapping of options")
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(given)}
    unknown = sorted(str(k) for k in recorded if k not in defaults)
    if unknown:
        raise WeightsError(f"--resume {last}: its 'opt' has options this version does not know: {unknown}")
    bad = [f"{k}={v!r} (expected {type(defaults[k]).__name__})" for k, v in recorded.items()
           if not _fits(v, defaults[k])]
    if bad:
        raise WeightsError(f"--resume {last}: its 'opt' has values of the wrong type: {', '.join(bad)}")
    return dict(recorded)


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type of ``default`` (ints for floats too; lists are of ints, as ``freeze``)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, type(default))
