"""Feature extractors: frozen models that turn images into named feature maps for caching and FeatureInput."""

from .extractors import (ACCEPTED_SPECS, CODE_KINDS, FUNCTION_KIND, IMAGENET_MEAN, IMAGENET_STD, SCHEMES, Extractor,
                         ExtractorSpecError, build_extractor, file_hash, read_state_dict, safe_key,
                         spec_kind, state_hash)

__all__ = ["ACCEPTED_SPECS", "CODE_KINDS", "FUNCTION_KIND", "IMAGENET_MEAN", "IMAGENET_STD", "SCHEMES", "Extractor",
           "ExtractorSpecError", "build_extractor", "file_hash", "read_state_dict", "safe_key",
           "spec_kind", "state_hash"]
