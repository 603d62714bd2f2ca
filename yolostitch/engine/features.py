"""Where a feature-input model's maps come from at train, val and detect time: a cache, or an extractor run
online; checks that the provider's contract is the one the model was built for; what checkpoints record."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any, Mapping

import torch

from ..data.feature_cache import FeatureCache
from ..errors import FlagError, WeightsError
from ..models.feature_input import FeatureContractError
from ..models.shape import Shape, contract_records, read_contract
from .inputs import Extractor

logger = logging.getLogger(__name__)


def check_contract(model: Any, contract: Mapping[str, Shape], source: str) -> None:
    """Every FeatureInput of ``model`` must find its key in ``contract`` with its channels and stride."""
    contract = read_contract(contract, source, FeatureContractError)
    for layer in model.feature_inputs:
        got = contract.get(str(layer.key))
        if got is None:
            raise FeatureContractError(f"{layer.name}: expects map {layer.key!r} ({layer.c_in}ch, stride "
                                       f"{layer.s_in}); {source} has {sorted(contract)}")
        if got != layer.contract():
            raise FeatureContractError(f"{layer.name}: expects {layer.key!r} with {layer.c_in} channels at stride "
                                       f"{layer.s_in}; {source} has {got.channels} channels at stride "
                                       f"{got.stride}")


def build_online_extractor(spec: str, weights: str | None, imgsz: int, device: torch.device, *,
                           allow_code: bool = True, expected_hash: str | None = None):
    """The extractor ``spec`` (``yolostitch.extract.build_extractor``); ``allow_code=False`` for a spec that
    came from a file rather than from the user."""
    from ..extract import build_extractor  # the extractor zoo is only imported when used

    return build_extractor(spec, weights=weights or None, imgsz=imgsz, device=device, allow_code=allow_code,
                           expected_hash=expected_hash or None)


def recorded_extractor_spec(spec: Any, source: str, flag: str = "--extractor") -> str:
    """``spec`` as read from ``source`` (a checkpoint), if it may be rebuilt from there: a built-in kind.

    ``torchscript:`` and ``module:function`` run code, so a file cannot choose them: the error says which flag
    passes the spec by hand. Nothing is read or imported here.
    """
    from ..extract import CODE_KINDS, ExtractorSpecError, spec_kind

    if not isinstance(spec, str):
        raise ExtractorSpecError(f"{source}: the extractor it records is a {type(spec).__name__}, not a spec")
    try:
        kind = spec_kind(spec)
    except ExtractorSpecError as e:
        raise ExtractorSpecError(f"{source}: the extractor it records is unusable: {e}") from None
    if kind in CODE_KINDS:
        raise ExtractorSpecError(f"{source} records the extractor {spec!r}, a {kind} extractor that runs code from "
                                 f"outside yolostitch, and a file cannot make that run: if you trust it, name it "
                                 f"yourself with {flag} {shlex.quote(spec)} (or give --features DIR, a cache made "
                                 "by extract.py)")
    return spec


def feature_record(contract: Mapping[str, Shape], cache: FeatureCache | None = None, extractor: Any = None,
                   extractor_weights: str = "") -> dict[str, Any]:
    """What a checkpoint keeps about its model's feature provider (plain types only: the contract as records)."""
    if cache is not None:
        return {"contract": contract_records(contract), "cache": str(cache.root),
                "extractor": cache.header["extractor"], "weights_hash": cache.header["weights_hash"],
                "imgsz": cache.imgsz, "extractor_weights": ""}
    return {"contract": contract_records(contract), "cache": "", "extractor": extractor.spec,
            "weights_hash": extractor.weights_hash, "imgsz": 0, "extractor_weights": str(extractor_weights or "")}


def feature_source(model: Any, features: str | Path, imgsz: int, device: torch.device, extractor: str = "",
                   extractor_weights: str = "") -> tuple[FeatureCache | None, Extractor | None]:
    """(cache, extractor) for evaluating or running ``model``: (None, None) for an image model; the cache
    ``features`` when given; else the user's ``extractor``; else the extractor recorded in the model's
    checkpoint, rebuilt if it is a built-in kind. Extractors must have the weights hash the checkpoint records."""
    if not getattr(model, "feature_inputs", None):
        for flag, value in (("--features", features), ("--extractor", extractor)):
            if value:
                raise FlagError(f"{flag} {value}: the model reads images (it has no FeatureInput layer)")
        return None, None
    checkpoint = getattr(model, "checkpoint", None) or {}
    source = str(checkpoint.get("path") or "the checkpoint")
    record = checkpoint.get("features") or {}
    if not isinstance(record, Mapping):
        raise WeightsError(f"{source}: its 'features' entry is a {type(record).__name__}, not a mapping")
    trained = record.get("weights_hash") or None
    if trained is not None and not isinstance(trained, str):
        raise WeightsError(f"{source}: its features weights_hash is a {type(trained).__name__}, not text")
    if features and extractor:
        raise FlagError(f"--features {features} and --extractor {extractor}: give one (a cache, or an extractor "
                        "to run online)")
    if features:
        cache = FeatureCache(features)
        check_contract(model, cache.contract, f"the cache {cache.root}")
        if trained and (record.get("extractor"), trained) != (cache.header["extractor"], cache.header["weights_hash"]):
            logger.warning(f"warning: {cache.root} holds maps of {cache.header['extractor']} (weights "
                           f"{cache.header['weights_hash']}) but the model was trained on {record.get('extractor')} "
                           f"(weights {trained})")
        return cache, None
    if extractor:  # named by the user: any kind, code included
        same = extractor == record.get("extractor")
        weights = extractor_weights or (_recorded_weights(record, source) if same else "")
        built = build_online_extractor(extractor, weights, imgsz, device, expected_hash=trained)
        check_contract(model, built.contract(), f"extractor {extractor}")
        return None, built
    if record.get("extractor") and not record.get("cache"):
        spec = recorded_extractor_spec(record["extractor"], source)  # before anything is built
        built = build_online_extractor(spec, _recorded_weights(record, source), imgsz, device, allow_code=False,
                                       expected_hash=trained)
        check_contract(model, built.contract(), f"extractor {spec}")
        return None, built
    made_by = f" (it was trained on a cache of {record['extractor']})" if record.get("extractor") else ""
    raise FlagError(f"the model takes feature maps {list(model.feature_contract())}{made_by}: pass --features DIR, "
                    "a cache made by extract.py, or --extractor SPEC")


def _recorded_weights(record: Mapping[str, Any], source: str) -> str:
    weights = record.get("extractor_weights") or ""
    if not isinstance(weights, str):
        raise WeightsError(f"{source}: its features extractor_weights is a {type(weights).__name__}, not a path")
    return weights
