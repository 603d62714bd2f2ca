"""Feature extractors: an image batch in, named feature maps with a fixed contract out.

A later stage caches these maps on disk and ``FeatureInput`` rows of a model consume them, so an extractor has
to be frozen, reproducible (an untrained one hashes and computes the same everywhere, which keeps caches valid)
and has to state its contract -- channels and stride of every map -- before anything is cached. The contract is
found once, by probing with a blank image, rather than trusted from metadata that may be wrong.

Specs (``build_extractor``):

- ``torchvision:NAME[:node1,node2,...]`` a torchvision classification model's feature stages
- ``timm:NAME[:i,j,k]`` a timm model built with ``features_only=True`` (``out_indices`` i, j, k)
- ``torchscript:FILE`` a TorchScript module returning a tensor, a list of tensors or a dict of them
- ``ckpt:FILE[:LAYERS]`` layers of a yolostitch or stock YOLOv5 checkpoint (default: what the head consumes)
- ``package.module:function`` any function taking the 0..1 image batch and returning maps as TorchScript does

``torchvision:``, ``timm:`` and ``ckpt:`` run our own code on data files (weights are read without unpickling
code), so they may be rebuilt from what a checkpoint records. ``torchscript:`` and ``module:function`` run code
from outside: callers building a spec they did not get from the user pass ``allow_code=False``. A spec is
classified from its text alone (:func:`spec_kind`) before anything is read or imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import itertools
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import FlagError, YolostitchError
from ..models.feature_input import FeatureContractError
from ..models.shape import Shape
from ..weights.stock_checkpoint import describe_load_error

KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_STRIDES = (8, 16, 32)
ACCEPTED_SPECS = ("accepted extractor specs: 'torchvision:NAME[:node1,node2,...]', 'timm:NAME[:i,j,k]', "
                  "'torchscript:FILE', 'ckpt:FILE[:LAYERS]' (e.g. ckpt:yolov5n.pt:4,6,9) or "
                  "'package.module:function' (an importable module and a function in it)")
SCHEMES = ("torchvision", "timm", "torchscript", "ckpt")
FUNCTION_KIND = "module:function"
CODE_KINDS = ("torchscript", FUNCTION_KIND)  # they run code from outside yolostitch: only when the user names them
SPATIAL_HINT = ("models without spatial feature maps (ViT tokens, classifier logits) need a 'timm:NAME' "
                "features_only model or a 'package.module:function' that returns (B, C, H, W) maps")
_FUNCTION_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_INT_LIST = re.compile(r"\d+(,\d+)*")
# Top-level children that start the classifier: never feature stages, and the probe stops when they are reached.
_HEAD_TYPES = (nn.Linear, nn.Flatten, nn.Dropout, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_HEAD_NAMES = {"avgpool", "fc", "classifier", "head", "heads", "dropout", "flatten", "AuxLogits", "aux1", "aux2"}


class ExtractorSpecError(YolostitchError, ValueError):
    """An extractor spec that is malformed, of no known kind, or not to be built where it came from."""


class Extractor(nn.Module):
    """A frozen feature extractor: ``forward(images)`` returns ``{key: (B, C, H/stride, W/stride)}``.

    ``body`` maps the (normalised) batch to a dict of maps; ``mean``/``std`` (None: no normalisation) are applied
    to the 0..1 input first. The contract (``features``) comes from probing ``body`` once with a blank image.
    The extractor stays in eval mode even when a parent calls ``.train()``: it is never trained, and BatchNorm
    statistics must not drift while a model around it trains.
    """

    def __init__(self, body: nn.Module, spec: str, weights_hash: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, imgsz: int = 320):
        super().__init__()
        self.body = body
        self.spec = spec
        self.weights_hash = weights_hash
        self.normalise = normalise_label(mean, std)
        self.register_buffer("mean", _channel_tensor(mean), persistent=False)
        self.register_buffer("std", _channel_tensor(std), persistent=False)
        self.requires_grad_(False)
        self.train(False)
        self.probe_size = probe_size(imgsz)
        self.features: dict[str, Shape] = self._probe(self.probe_size)  # the contract, ordered by stride

    def train(self, mode: bool = True) -> Extractor:
        """Always eval: a frozen extractor never trains (see the class docstring)."""
        return super().train(False)

    @torch.no_grad()  # not inference_mode: the outputs may feed trainable layers
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: (B, 3, H, W) float RGB in 0..1, H and W multiples of 32. Maps come in ``features`` order."""
        _check_images(images, self.spec)
        maps = self._run(images)
        out: dict[str, torch.Tensor] = {}
        for key, shape in self.features.items():
            if key not in maps:
                raise FlagError(f"{self.spec}: the extractor returned {sorted(maps)}, without {key!r} "
                                "which its contract promised")
            out[key] = _check_map(maps[key], key, shape, images.shape, self.spec)
        return out

    def contract(self) -> dict[str, Shape]:
        """``{key: Shape}``: what a FeatureInput row must declare for each map, in stride order."""
        return dict(self.features)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, weights_hash={self.weights_hash}, normalise={self.normalise!r}"

    def _run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images if self.mean is None else (images - self.mean) / self.std
        return self.body(x)

    def _probe(self, size: int) -> dict[str, Shape]:
        tensors = itertools.chain(self.parameters(), self.buffers())
        device = next((t.device for t in tensors if t is not None), torch.device("cpu"))
        try:
            with torch.no_grad():
                maps = self._run(torch.zeros(1, 3, size, size, device=device))
        except Exception as e:  # e.g. a fixed-size ViT; say which spec and size failed
            raise FlagError(f"{self.spec}: probing with a {size}x{size} image failed ({type(e).__name__}: {e}); "
                            "give imgsz= the input size the model needs") from e
        if not isinstance(maps, dict) or not maps:
            raise FlagError(f"{self.spec}: the extractor returned no feature maps")
        for key in maps:
            if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
                raise FlagError(f"feature key {key!r} must match {KEY_PATTERN.pattern} (it is written into YAML)")
        shapes = {key: Shape(int(m.shape[1]), _stride_of(m, size, f"{self.spec}: output {key!r}"))
                  for key, m in maps.items()}
        return dict(sorted(shapes.items(), key=lambda kv: kv[1].stride))  # stable: equal strides keep the body's order


def spec_kind(spec: str) -> str:
    """The kind of ``spec``: one of ``SCHEMES`` or ``FUNCTION_KIND``, from its text alone (nothing is read or
    imported). ExtractorSpecError, listing the accepted specs, for anything else.

    A ``word:word`` spec is only a ``module:function`` when ``word`` is not a near miss of a scheme: a typo such
    as ``torchvison:resnet18`` or ``Timm:resnet18`` is an unknown kind, never a module to import. (A module whose
    name is that close to a scheme can still be named through its package, ``pkg.timmy:fn``.)
    """
    scheme, _ = _split_spec(spec)
    if scheme in SCHEMES:
        return scheme
    near = _near_scheme(scheme)
    if near:
        raise ExtractorSpecError(f"extractor spec {spec!r}: unknown kind {scheme!r} (did you mean '{near}:'?); "
                                 f"{ACCEPTED_SPECS}")
    if _FUNCTION_SPEC.fullmatch(spec):
        return FUNCTION_KIND
    raise ExtractorSpecError(f"extractor spec {spec!r}: unknown kind {scheme!r}; {ACCEPTED_SPECS}")


def build_extractor(spec: str, weights: str | os.PathLike | None = None, imgsz: int = 320,
                    device: str | torch.device = "cpu", *, allow_code: bool = True,
                    expected_hash: str | None = None) -> Extractor:
    """Build the frozen extractor named by ``spec`` (see the module docstring), probed at ``imgsz`` (rounded up
    to a multiple of 32) and moved to ``device``. ``weights`` is a state-dict file for ``torchvision:`` and
    ``timm:`` models (untrained, deterministically initialised weights otherwise).

    ``allow_code=False`` refuses ``torchscript:`` and ``module:function`` specs before touching them (for specs
    read from a file). ``expected_hash``: the weights hash the extractor must have (FeatureContractError
    otherwise), checked from the files before anything is loaded where the hash is a file's
    (``torchscript:``, ``ckpt:``, a ``weights`` file), else right after building, before the probe runs it.
    """
    kind = spec_kind(spec)
    if kind in CODE_KINDS and not allow_code:
        raise ExtractorSpecError(f"extractor spec {spec!r}: a {kind} extractor runs code from outside yolostitch "
                                 "and is built only when the user names it")
    if weights is not None and kind not in ("torchvision", "timm"):
        names = "its code" if kind == FUNCTION_KIND else "its file"
        raise FlagError(f"{spec}: weights= applies to torchvision: and timm: specs only; a {kind} spec names "
                        f"{names} itself")
    builders: dict[str, Callable[..., Extractor]] = {"torchvision": _build_torchvision, "timm": _build_timm,
                                                     "torchscript": _build_torchscript, "ckpt": _build_ckpt,
                                                     FUNCTION_KIND: _build_function}
    rest = spec.split(":", 1)[1]
    extractor = builders[kind](rest, spec, weights, imgsz, expected_hash)
    return extractor.to(device)


# ---------------------------------------------------------------------------------------------------- helpers


def safe_key(name: str) -> str:
    """``name`` as a YAML-safe key: characters outside ``KEY_PATTERN`` become ``_``."""
    key = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(name))
    return key if KEY_PATTERN.fullmatch(key) else f"_{key}"


def probe_size(imgsz: int) -> int:
    """``imgsz`` rounded up to a multiple of 32 (at least 32)."""
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < 1:
        raise FlagError(f"imgsz must be a positive integer, got {imgsz!r}")
    return max(32, math.ceil(imgsz / 32) * 32)


def normalise_label(mean: Sequence[float] | None, std: Sequence[float] | None) -> str:
    """``"none"``, ``"imagenet"``, or ``"mean=a,b,c std=d,e,f"`` for other statistics (some timm models)."""
    if mean is None and std is None:
        return "none"
    if mean is None or std is None:
        raise ValueError("give both mean and std, or neither")
    if len(mean) == 3 and len(std) == 3 and all(math.isclose(a, b, abs_tol=1e-6) for a, b in
                                                zip((*mean, *std), (*IMAGENET_MEAN, *IMAGENET_STD))):
        return "imagenet"
    return f"mean={','.join(f'{v:g}' for v in mean)} std={','.join(f'{v:g}' for v in std)}"


def file_hash(path: str | os.PathLike) -> str:
    """First 16 hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def state_hash(state: Mapping[str, torch.Tensor], digest: Any = None) -> str:
    """First 16 hex digits of a sha256 over the names, dtypes, shapes and bytes of a state dict's tensors."""
    digest = digest or hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _channel_tensor(values: Sequence[float] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor([float(v) for v in values]).view(1, -1, 1, 1)


def _stride_of(m: Any, size: int, where: str) -> int:
    """The stride of a map produced from a ``size`` x ``size`` probe; ValueError unless (B, C, H, W) and whole."""
    if not isinstance(m, torch.Tensor) or m.dim() != 4:
        shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise FlagError(f"{where} has shape {shape}, not a (B, C, H, W) feature map; {SPATIAL_HINT}")
    h, w = int(m.shape[2]), int(m.shape[3])
    if h != w or h < 1 or size % h:
        raise FlagError(f"{where} is {h}x{w} for a {size}x{size} probe: not a (B, C, H, W) map with a whole "
                        "stride >= 1 (channels-last output, or padding that does not divide the input evenly)")
    return size // h


def _check_images(images: torch.Tensor, spec: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{spec}: expected a (B, 3, H, W) image batch, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{spec}: expected float images in 0..1, got {images.dtype}")
    if images.shape[2] % 32 or images.shape[3] % 32:
        raise ValueError(f"{spec}: image height and width must be multiples of 32, got {tuple(images.shape[2:])}")


def _check_map(m: torch.Tensor, key: str, feature: Shape, image_shape: torch.Size, spec: str) -> torch.Tensor:
    """The map must keep the contract at every input size, or cached features would not fit FeatureInput."""
    b, _, height, width = image_shape
    ok = isinstance(m, torch.Tensor) and m.dim() == 4 and m.shape[0] == b and m.shape[1] == feature.channels
    if ok and height % feature.stride == 0 and width % feature.stride == 0:
        ok = tuple(m.shape[2:]) == (height // feature.stride, width // feature.stride)
    if not ok:
        shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise FlagError(f"{spec}: map {key!r} has shape {shape} for images {tuple(image_shape)}, breaking "
                        f"its contract ({feature.channels} channels at stride {feature.stride})")
    return m


def _near_scheme(word: str) -> str:
    """The scheme ``word`` misspells (other case, or one or two letters off), or ``""``. Dotted words are module
    paths and are left to the import."""
    if "." in word:
        return ""
    lowered = word.lower()
    return next((scheme for scheme in SCHEMES
                 if word != scheme and _edit_distance(lowered, scheme) <= (1 if len(scheme) <= 4 else 2)), "")


def _edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn ``a`` into ``b``."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def _check_hash(actual: str, expected: str | None, spec: str) -> None:
    """The extractor's weights must be the ones the model was trained with."""
    if expected is not None and actual != expected:
        raise FeatureContractError(f"extractor {spec}: weights {actual} differ from the {expected} the model was "
                                   "trained with")


def _split_spec(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or ":" not in spec:
        raise ExtractorSpecError(f"extractor spec {spec!r} is malformed; {ACCEPTED_SPECS}")
    scheme, rest = spec.split(":", 1)
    if not scheme or not rest:
        raise ExtractorSpecError(f"extractor spec {spec!r} is malformed; {ACCEPTED_SPECS}")
    return scheme, rest


def _names(text: str, spec: str) -> list[str]:
    """A comma-separated list (nodes, indices); empty text means none given."""
    if not text:
        return []
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise FlagError(f"extractor spec {spec!r}: empty name in the list {text!r}; {ACCEPTED_SPECS}")
    return names


def _ints(text: str, spec: str) -> list[int]:
    if text and not _INT_LIST.fullmatch(text.replace(" ", "")):
        raise FlagError(f"extractor spec {spec!r}: {text!r} is not a comma-separated list of integers")
    return [int(n) for n in _names(text, spec)]


def _existing_file(path: str | os.PathLike, spec: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: file not found: {path}")
    return path


@contextlib.contextmanager
def _seeded(seed: int = 0) -> Iterator[None]:
    """Fixed global RNG inside, untouched outside: untrained models initialise identically on every build."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def read_state_dict(path: str | os.PathLike, spec: str = "weights") -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (plain, or under ``state_dict`` /
    ``model``), read without running pickled code."""
    path = _existing_file(path, spec)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # a dependency of the package

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise FlagError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch's own message advises weights_only=False, i.e. running the file: not repeated
        raise FlagError(f"{path}: not a PyTorch state-dict file torch can read safely (weights_only): "
                        f"{describe_load_error(e)}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FlagError(f"{path}: holds no state dict (a dict of tensors, possibly under 'state_dict' or 'model')")
    return dict(obj)


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike, spec: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the first mismatching keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        def first(items: list[str]) -> str:
            return f"{items[:5]}{'...' if len(items) > 5 else ''}"
        raise FlagError(f"{path}: the weights do not fit {spec}: missing {first(missing)}, "
                        f"unexpected {first(unexpected)}, wrong shapes {first(shapes)}")
    model.load_state_dict(state, strict=True)


class _NamedOutputs(nn.Module):
    """Adapts a module or function returning a tensor, a list/tuple of tensors or a dict to ``{key: map}``:
    dict keys made YAML-safe, otherwise ``keys`` by position (default ``out0``, ``out1``, ...)."""

    def __init__(self, inner: Callable[[torch.Tensor], Any], spec: str, keys: Sequence[str] | None = None):
        super().__init__()
        if isinstance(inner, nn.Module):
            self.inner = inner
        else:
            self.inner = None
            self.function = inner
        self.spec = spec
        self.keys = list(keys) if keys is not None else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(x) if self.inner is not None else self.function(x)
        if isinstance(out, torch.Tensor):
            out = [out]
        if isinstance(out, (list, tuple)):
            keys = self.keys if self.keys is not None and len(self.keys) == len(out) else \
                [f"out{i}" for i in range(len(out))]
            return dict(zip(keys, out))
        if isinstance(out, Mapping):
            maps = {safe_key(k): v for k, v in out.items()}
            if len(maps) != len(out):
                raise FlagError(f"{self.spec}: output keys {list(out)} collide once made YAML-safe")
            return maps
        raise FlagError(f"{self.spec}: expected a tensor, a list of tensors or a dict of tensors, "
                        f"got {type(out).__name__}")


# ------------------------------------------------------------------------------------------------ torchvision


def _build_torchvision(rest: str, spec: str, weights: str | os.PathLike | None, imgsz: int,
                       expected_hash: str | None = None) -> Extractor:
    if weights is not None:
        _check_hash(file_hash(_existing_file(weights, spec)), expected_hash, spec)
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    name, _, node_text = rest.partition(":")
    nodes = _names(node_text, spec)
    if name not in torchvision.models.list_models(module=torchvision.models):
        kind = "is not a classification model" if name in torchvision.models.list_models() else "is unknown"
        raise FlagError(f"{spec}: torchvision model {name!r} {kind}; see "
                        "torchvision.models.list_models(module=torchvision.models)")
    with _seeded():
        model = torchvision.models.get_model(name, weights=None)
    if weights is not None:
        load_strict(model, read_state_dict(weights, spec), weights, spec)
        weights_hash = file_hash(weights)
    else:
        weights_hash = state_hash(model.state_dict())
        _check_hash(weights_hash, expected_hash, spec)
    model.eval()
    nodes = nodes or auto_nodes(model, probe_size(imgsz), spec)
    keys = {node: safe_key(node) for node in nodes}
    if len(set(keys.values())) != len(keys):
        raise FlagError(f"{spec}: node names {nodes} repeat")
    try:
        body = create_feature_extractor(model, return_nodes=keys)
    except Exception as e:
        raise FlagError(f"{spec}: cannot extract nodes {nodes}: {e}") from e
    return Extractor(body, spec, weights_hash, IMAGENET_MEAN, IMAGENET_STD, imgsz)


class _StopProbe(Exception):
    """Raised by a hook when the classifier starts: the stages are all seen, the rest need not run."""


def auto_nodes(model: nn.Module, size: int, spec: str, strides: Sequence[int] = DEFAULT_STRIDES) -> list[str]:
    """For each of ``strides``, the last feature stage of ``model`` at that stride.

    Stages are the top-level children, except that a top-level ``nn.Sequential`` whose own children reach
    several strides (``features`` of VGG/MobileNet/EfficientNet/ConvNeXt/DenseNet, RegNet's ``trunk_output``)
    is opened up into its children. Classifier modules are not stages. A stage that outputs anything but a
    (B, C, H, W) map means the model has no spatial features (ViT, Swin's channels-last maps): ValueError.
    """
    shapes = _stage_shapes(model, size, spec)
    chosen: dict[int, str] = {}
    candidates = _stage_candidates(model, shapes, size)
    for name, shape in candidates:
        if shape is None or len(shape) != 4 or shape[2] != shape[3]:
            raise FlagError(f"{spec}: stage {name!r} outputs {shape or 'no tensor'}, not a (B, C, H, W) "
                            f"feature map; {SPATIAL_HINT}")
        stride = _whole_stride(shape, size)
        if stride in strides:
            chosen[stride] = name
    if not chosen:
        found = ", ".join(f"{n} {s}" for n, s in candidates) or "none"
        raise FlagError(f"{spec}: no stage at stride {'/'.join(map(str, strides))} for a {size}px probe "
                        f"(stages: {found}); name nodes explicitly ({spec}:node1,node2); {SPATIAL_HINT}")
    return [chosen[s] for s in sorted(chosen)]


def _is_head(name: str, module: nn.Module) -> bool:
    return name in _HEAD_NAMES or isinstance(module, _HEAD_TYPES)


def _stage_shapes(model: nn.Module, size: int, spec: str) -> dict[str, tuple[int, ...] | None]:
    """Output shapes of the top-level children and of the children of top-level Sequentials, from one probe."""
    shapes: dict[str, tuple[int, ...] | None] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        return hook

    def stop(module: nn.Module, args: Any) -> None:
        raise _StopProbe

    handles = []
    try:
        for name, child in model.named_children():
            if _is_head(name, child):
                handles.append(child.register_forward_pre_hook(stop))
                continue
            handles.append(child.register_forward_hook(record(name)))
            if isinstance(child, nn.Sequential):
                handles += [sub.register_forward_hook(record(f"{name}.{s}")) for s, sub in child.named_children()]
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except _StopProbe:
        pass
    except Exception as e:
        raise FlagError(f"{spec}: running the model on a {size}x{size} probe failed "
                        f"({type(e).__name__}: {e}); {SPATIAL_HINT}") from e
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _stage_candidates(model: nn.Module, shapes: Mapping[str, Any], size: int) -> list[tuple[str, Any]]:
    candidates = []
    for name, child in model.named_children():
        if name not in shapes:  # a classifier, or never called
            continue
        subs = [(f"{name}.{s}", shapes[f"{name}.{s}"]) for s, _ in child.named_children()
                if f"{name}.{s}" in shapes] if isinstance(child, nn.Sequential) else []
        spans = {_whole_stride(shape, size) for _, shape in subs} - {None}
        candidates += subs if len(spans) > 1 else [(name, shapes[name])]
    return candidates


def _whole_stride(shape: tuple[int, ...] | None, size: int) -> int | None:
    if shape is None or len(shape) != 4 or shape[2] != shape[3] or shape[2] < 1 or size % shape[2]:
        return None
    return size // shape[2]


# ------------------------------------------------------------------------------------------------------ timm


def _import_timm(spec: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: weights come from files only
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"{spec}: timm:... needs the timm package: pip install timm") from e
    return timm


def _build_timm(rest: str, spec: str, weights: str | os.PathLike | None, imgsz: int,
               expected_hash: str | None = None) -> Extractor:
    if weights is not None:
        _check_hash(file_hash(_existing_file(weights, spec)), expected_hash, spec)
    timm = _import_timm(spec)
    name, _, index_text = rest.partition(":")
    indices = _ints(index_text, spec)
    model = _create_timm(timm, name, spec)
    info = model.feature_info.info
    if indices:
        bad = [i for i in indices if i >= len(info)]
        if bad:
            raise FlagError(f"{spec}: out_indices {bad} out of range; {name} has {len(info)} feature levels "
                            f"(reductions {[level['reduction'] for level in info]})")
    else:
        last = {level["reduction"]: i for i, level in enumerate(info) if level["reduction"] in DEFAULT_STRIDES}
        if not last:
            raise FlagError(f"{spec}: no feature level at stride 8/16/32 (reductions "
                            f"{[level['reduction'] for level in info]}); give out_indices: {spec}:i,j,k")
        indices = [last[r] for r in sorted(last)]
    if tuple(indices) != tuple(model.feature_info.out_indices):
        model = _create_timm(timm, name, spec, out_indices=tuple(indices))
    if weights is not None:
        model = _timm_with_weights(timm, name, model, tuple(indices), weights, spec)
        weights_hash = file_hash(weights)
    else:
        weights_hash = state_hash(model.state_dict())
        _check_hash(weights_hash, expected_hash, spec)
    keys = [safe_key(n) for n in model.feature_info.module_name()]
    if len(set(keys)) != len(keys):
        keys = [f"{key}.{i}" for key, i in zip(keys, model.feature_info.out_indices)]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean") or IMAGENET_MEAN, cfg.get("std") or IMAGENET_STD
    return Extractor(_NamedOutputs(model, spec, keys), spec, weights_hash, mean, std, imgsz)


def _create_timm(timm: Any, name: str, spec: str, **kwargs: Any) -> nn.Module:
    try:
        with _seeded():
            return timm.create_model(name, features_only=True, **{"pretrained": False, **kwargs})
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise FlagError(f"{spec}: timm has no model {name!r} (see timm.list_models())") from e
        raise FlagError(f"{spec}: timm cannot build {name!r} with features_only=True: {e}") from e


def _timm_with_weights(timm: Any, name: str, model: nn.Module, indices: tuple[int, ...],
                       weights: str | os.PathLike, spec: str) -> nn.Module:
    """Load a state dict saved from the features_only model itself, or from the full model (a training run's
    checkpoint). The latter goes through the full model, strictly, then timm's own loader for its layout."""
    state = read_state_dict(weights, spec)
    if set(state) == set(model.state_dict()):
        load_strict(model, state, weights, spec)
        return model
    with _seeded():
        full = timm.create_model(name, pretrained=False)
    load_strict(full, state, weights, spec)
    return _create_timm(timm, name, spec, out_indices=indices, pretrained=True,
                        pretrained_cfg_overlay={"state_dict": full.state_dict()})


# ---------------------------------------------------------------------------------------- torchscript / function


def _build_torchscript(rest: str, spec: str, weights: None, imgsz: int,
                       expected_hash: str | None = None) -> Extractor:
    path = _existing_file(rest, spec)
    weights_hash = file_hash(path)
    _check_hash(weights_hash, expected_hash, spec)  # before the program is loaded
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise FlagError(f"{spec}: {path} is not a loadable TorchScript file ({type(e).__name__}: {e})") from e
    return Extractor(_NamedOutputs(module, spec), spec, weights_hash, None, None, imgsz)


def _build_function(rest: str, spec: str, weights: None, imgsz: int,
                    expected_hash: str | None = None) -> Extractor:
    """Import the module the user named; its hash (its source file) can only be taken once it is imported."""
    module_name, attribute = spec.split(":", 1)
    if not _top_level_exists(module_name):  # a look on sys.path: nothing imported for a name that is no module
        raise ExtractorSpecError(f"extractor spec {spec!r}: neither a known kind nor an importable module "
                                 f"{module_name!r}; {ACCEPTED_SPECS}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(f"{e.name}.")):
            raise ExtractorSpecError(f"extractor spec {spec!r}: neither a known kind nor an importable module "
                                     f"{module_name!r}; {ACCEPTED_SPECS}") from e
        raise ImportError(f"{spec}: importing {module_name} failed: {e}") from e
    except Exception as e:
        raise ImportError(f"{spec}: importing {module_name} failed ({type(e).__name__}: {e})") from e
    function: Any = module
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise FlagError(f"{spec}: module {module_name} has no attribute {attribute!r}")
        function = getattr(function, part)
    if isinstance(function, type):
        raise FlagError(f"{spec}: {attribute} is a class; give a function (or a module instance) that takes "
                        "the image batch and returns feature maps")
    if not callable(function):
        raise FlagError(f"{spec}: {attribute} is a {type(function).__name__}, not callable")
    weights_hash = _function_hash(module, function, spec)
    _check_hash(weights_hash, expected_hash, spec)  # before the probe calls it
    return Extractor(_NamedOutputs(function, spec), spec, weights_hash, None, None, imgsz)


def _top_level_exists(module_name: str) -> bool:
    """Whether the top-level package of ``module_name`` can be found, without importing it."""
    top = module_name.partition(".")[0]
    if top in sys.modules:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _function_hash(module: Any, function: Any, spec: str) -> str:
    """The module's source file (else the spec), plus the tensors when the callable is an nn.Module instance."""
    digest = hashlib.sha256()
    source = getattr(module, "__file__", None)
    digest.update(Path(source).read_bytes() if source and Path(source).is_file() else spec.encode())
    if isinstance(function, nn.Module):
        return state_hash(function.state_dict(), digest)
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------ ckpt


def _build_ckpt(rest: str, spec: str, weights: None, imgsz: int, expected_hash: str | None = None) -> Extractor:
    from ..weights import load_model

    file_text, layer_text = rest, ""
    head, _, tail = rest.rpartition(":")
    if head and _INT_LIST.fullmatch(tail.replace(" ", "")):  # rpartition: a Windows drive colon stays in the file
        file_text, layer_text = head, tail
    path = _existing_file(file_text, spec)
    weights_hash = file_hash(path)
    _check_hash(weights_hash, expected_hash, spec)
    model = load_model(path, device="cpu")
    indices = _ints(layer_text, spec) or backbone_outputs(model.yaml, model.layers)
    body = _CheckpointLayers(model, indices, spec)
    return Extractor(body, spec, weights_hash, None, None, imgsz)


def backbone_outputs(config: Mapping[str, Any], layers: Sequence[Any]) -> list[int]:
    """The backbone layers the head rows read (stock YOLOv5: 4, 6, 9), plus the last backbone layer."""
    n_backbone = len(config["backbone"])
    used = {s for layer in layers[n_backbone:] for s in layer.sources if 0 <= s < n_backbone}
    return sorted(used | {n_backbone - 1})


class _CheckpointLayers(nn.Module):
    """A checkpoint's model run (``StitchModel.forward_layers``) up to the deepest requested layer; the layers
    after it (the neck and heads) are dropped. Returns ``{"model.i": map}``."""

    def __init__(self, model: nn.Module, outputs: Sequence[int], spec: str):
        super().__init__()
        layers = model.layers
        for i in outputs:
            if not 0 <= i < len(layers):
                raise FlagError(f"{spec}: layer {i} does not exist (the model has layers 0..{len(layers) - 1})")
            if layers[i].shape is None:
                raise FlagError(f"{spec}: layer {i} ({layers[i].module_name}) outputs no feature map")
        stop = max(outputs) + 1
        for layer in layers[:stop]:
            if type(layer.module).__name__ == "FeatureInput":
                raise FlagError(f"{spec}: layer {layer.index} is a FeatureInput: this model reads precomputed "
                                "features, not images, so its layers cannot extract features from images")
        for layer in layers[stop:]:  # never run: free them
            layer.module = model.model[layer.index] = nn.Identity()
        self.model = model
        self.outputs = list(dict.fromkeys(outputs))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.model.forward_layers(x, set(self.outputs))
        return {f"model.{i}": maps[i] for i in self.outputs}
