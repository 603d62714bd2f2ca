"""Feature extractors: frozen models that turn images into named feature maps for caching and FeatureInput."""

from .extractors import (ACCEPTED_SPECS, IMAGENET_MEAN, IMAGENET_STD, Extractor, FeatureSpec, build_extractor,
                         file_hash, read_state_dict, safe_key, state_hash)

__all__ = ["ACCEPTED_SPECS", "IMAGENET_MEAN", "IMAGENET_STD", "Extractor", "FeatureSpec", "build_extractor",
           "file_hash", "read_state_dict", "safe_key", "state_hash"]
