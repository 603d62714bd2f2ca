"""Where a feature-input model's maps come from at train, val and detect time: a cache, or an extractor run
online; checks that the provider's contract is the one the model was built for; what checkpoints record."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..data.feature_cache import FeatureCache
from ..models.feature_input import FeatureContractError
from .inputs import Extractor


def check_contract(model: Any, contract: Mapping[str, Mapping[str, int]], source: str) -> None:
    """Every FeatureInput of ``model`` must find its key in ``contract`` with its channels and stride."""
    for layer in model.feature_inputs:
        got = contract.get(str(layer.key))
        if got is None:
            raise FeatureContractError(f"{layer.name}: expects map {layer.key!r} ({layer.c_in}ch, stride "
                                       f"{layer.s_in}); {source} has {sorted(contract)}")
        if (int(got["channels"]), int(got["stride"])) != (layer.c_in, layer.s_in):
            raise FeatureContractError(f"{layer.name}: expects {layer.key!r} with {layer.c_in} channels at stride "
                                       f"{layer.s_in}; {source} has {got['channels']} channels at stride "
                                       f"{got['stride']}")


def build_online_extractor(spec: str, weights: str | None, imgsz: int, device: torch.device):
    from ..extract import build_extractor  # the extractor zoo is only imported when used

    return build_extractor(spec, weights=weights or None, imgsz=imgsz, device=device)


def feature_record(contract: Mapping[str, Any], cache: FeatureCache | None = None, extractor: Any = None,
                   extractor_weights: str = "") -> dict[str, Any]:
    """What a checkpoint keeps about its model's feature provider (plain types only)."""
    if cache is not None:
        return {"contract": dict(contract), "cache": str(cache.root), "extractor": cache.header["extractor"],
                "weights_hash": cache.header["weights_hash"], "imgsz": cache.imgsz, "extractor_weights": ""}
    return {"contract": dict(contract), "cache": "", "extractor": extractor.spec, "weights_hash": extractor.weights_hash,
            "imgsz": 0, "extractor_weights": str(extractor_weights or "")}


def feature_source(model: Any, features: str | Path, imgsz: int, device: torch.device
                   ) -> tuple[FeatureCache | None, Extractor | None]:
    """(cache, extractor) for evaluating or running ``model``: (None, None) for an image model; the cache
    ``features`` when given; else the extractor recorded in the model's checkpoint, rebuilt."""
    if not getattr(model, "feature_inputs", None):
        if features:
            raise ValueError(f"--features {features}: the model reads images (it has no FeatureInput layer)")
        return None, None
    record = getattr(model, "checkpoint", {}).get("features") or {}
    if features:
        cache = FeatureCache(features)
        check_contract(model, cache.contract, f"the cache {cache.root}")
        trained = record.get("weights_hash")
        if trained and (record.get("extractor"), trained) != (cache.header["extractor"], cache.header["weights_hash"]):
            print(f"warning: {cache.root} holds maps of {cache.header['extractor']} (weights {cache.header['weights_hash']}) "
                  f"but the model was trained on {record.get('extractor')} (weights {trained})")
        return cache, None
    if record.get("extractor") and not record.get("cache"):
        extractor = build_online_extractor(record["extractor"], record.get("extractor_weights"), imgsz, device)
        if extractor.weights_hash != record.get("weights_hash"):
            raise FeatureContractError(f"extractor {record['extractor']}: weights {extractor.weights_hash} differ from "
                                       f"the {record.get('weights_hash')} the model was trained with")
        check_contract(model, extractor.contract(), f"extractor {record['extractor']}")
        return None, extractor
    made_by = f" (it was trained on a cache of {record['extractor']})" if record.get("extractor") else ""
    raise ValueError(f"the model takes feature maps {list(model.feature_contract())}{made_by}: pass --features DIR, "
                     "a cache made by extract.py")
