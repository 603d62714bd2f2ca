"""Writing a feature cache: run an extractor over a dataset's images, one safetensors file per image.

Resumable by construction: each file is written atomically and carries in its metadata what made it (the
header fields and the image's size and mtime), so a rerun — after a kill, or on a grown dataset — reads
those and extracts only images whose file is missing or not current. The index is rewritten as it goes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic import atomic_write
from ..data.config import load_data_config
from ..data.dataset import MultiTaskDataset, collate, loader_workers, worker_init
from ..data.feature_cache import FLIP, FORMAT, INDEX, CacheEntry, FeatureCacheError, bytes_per_image
from ..errors import FlagError
from ..models.shape import contract_records, read_contract
from ..data.labels import ImageLabels
from ..data.scan import scan_split

logger = logging.getLogger(__name__)

INDEX_EVERY = 256  # images between index rewrites (a killed run loses no extracted file either way)


def write_cache(extractor: Any, data: str, out: str | Path, imgsz: int = 640, splits: Sequence[str] | None = None,
                batch_size: int = 16, workers: int = 4, dtype: str = "float16", flip: bool = False,
                device: str | torch.device = "cpu") -> dict[str, Any]:
    """Extract every image of the data YAML's ``splits`` (default: all) into ``out``; return a summary."""
    if dtype not in ("float16", "bfloat16", "float32"):
        raise FlagError(f"--dtype {dtype}: choose float16, bfloat16 or float32")
    out = Path(out)
    config = load_data_config(data)
    names = list(splits) if splits else list(config.splits)
    unknown = [s for s in names if s not in config.splits]
    if unknown:
        raise FlagError(f"--splits {unknown}: {config.source} has splits {list(config.splits)}")
    header = {"format": FORMAT, "extractor": extractor.spec, "weights_hash": extractor.weights_hash,
              "normalise": extractor.normalise, "imgsz": int(imgsz), "dtype": dtype, "flip": bool(flip),
              "features": contract_records(extractor.contract()), "data": str(config.source),
              "letterbox": "long side resized to imgsz, centred padding (114) to imgsz x imgsz"}
    todo: list[tuple[str, ImageLabels]] = []
    entries: dict[str, CacheEntry] = {}
    for split in names:
        scan = scan_split(config.splits[split], config.nc, config.kpt_shape)
        for p in scan.problems:
            logger.info("skipped %s: %s", p.file, p.reason)
        for lab in scan.labels:
            entry = _current_entry(out, split, lab, header)
            if entry is not None:
                entries[entry.im_file] = entry
            else:
                todo.append((split, lab))
    per_image = bytes_per_image(read_contract(header["features"]), imgsz, dtype, flip)
    total = len(todo) + len(entries)
    logger.info(f"extracting {extractor.spec} at imgsz {imgsz} from {config.source} into {out}: {total} images, "
                f"{len(entries)} already current, {len(todo)} to extract; about {per_image / 2**10:.0f} KB per image, "
                f"{per_image * total / 2**20:.1f} MB in all")
    out.mkdir(parents=True, exist_ok=True)
    _write_index(out, header, entries)
    start, written = time.time(), 0
    if todo:
        written = _extract(extractor, todo, out, header, entries, batch_size, workers, device)
    _write_index(out, header, entries)
    size = sum((out / e.file).stat().st_size for e in entries.values())
    summary = {"images": len(entries), "written": written, "current": total - len(todo), "bytes": size,
               "bytes_per_image": size / max(len(entries), 1), "seconds": time.time() - start, "out": str(out)}
    logger.info(f"done: {len(entries)} images in {out} ({written} written, {summary['current']} already current), "
                f"{size / 2**20:.1f} MB, {summary['bytes_per_image'] / 2**10:.0f} KB per image, "
                f"{summary['seconds']:.1f} s")
    return summary


def _extract(extractor, todo, out: Path, header: dict, entries: dict[str, CacheEntry], batch_size: int,
             workers: int, device) -> int:
    dataset = MultiTaskDataset([lab for _, lab in todo], imgsz=header["imgsz"], augment=False, use_masks=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, worker_init_fn=worker_init,
                        num_workers=loader_workers(workers, batch_size))
    dtype = getattr(torch, header["dtype"])
    extractor = extractor.to(device).eval()
    written, done = 0, 0
    bar = tqdm(loader, desc="extract", mininterval=0.5 if sys.stderr.isatty() else 30)
    for batch in bar:
        images = batch["img"].to(device).float() / 255
        with torch.no_grad():
            maps = extractor(images)
            flipped = extractor(images.flip(-1)) if header["flip"] else {}
        _check_maps(maps, header, images.shape[2:])
        _check_range(maps, header, batch["im_file"])
        _check_range({k + FLIP: v for k, v in flipped.items()}, header, batch["im_file"])
        for i, im_file in enumerate(batch["im_file"]):
            split = todo[done + i][0]
            tensors = {k: v[i].to(dtype).contiguous().cpu() for k, v in maps.items()}
            tensors.update({k + FLIP: v[i].to(dtype).contiguous().cpu() for k, v in flipped.items()})
            entry = _entry(out, split, im_file, batch["ori_shape"][i], batch["ratio_pad"][i])
            _save_atomic(tensors, out / entry.file, _file_metadata(header, entry))
            entries[entry.im_file] = entry
            written += 1
        done += len(batch["im_file"])
        if done // INDEX_EVERY != (done - len(batch["im_file"])) // INDEX_EVERY:
            _write_index(out, header, entries)
    return written


def _check_maps(maps: dict[str, torch.Tensor], header: dict, size) -> None:
    """The extractor must give the maps its contract promised, at the size its strides promise."""
    for key, shape in read_contract(header["features"]).items():
        if key not in maps:
            raise FeatureCacheError(f"extractor {header['extractor']} returned {sorted(maps)}, its contract has {key!r}")
        t = maps[key]
        want = (shape.channels, *(-(-int(d) // shape.stride) for d in size))
        if tuple(t.shape[1:]) != want:
            raise FeatureCacheError(f"extractor {header['extractor']}: map {key!r} has shape {tuple(t.shape[1:])} for "
                                    f"a {tuple(size)} input; its contract ({shape.channels}ch, stride "
                                    f"{shape.stride}) gives {want}")


def _check_range(maps: dict[str, torch.Tensor], header: dict, im_files: Sequence[str]) -> None:
    """Every stored value must be finite in the cache's dtype: a map beyond float16's range would otherwise be
    written as inf and only fail training, epochs later. Checked on the cast itself (what would be stored)."""
    dtype = getattr(torch, header["dtype"])
    for key, t in maps.items():
        stored = t.to(dtype)
        bad = ~torch.isfinite(stored)
        if not bad.any():
            continue
        i = int(bad.reshape(len(bad), -1).any(1).nonzero()[0])
        where = f"extractor {header['extractor']}: map {key!r} of {im_files[i]}"
        if not torch.isfinite(t[i]).all():
            raise FeatureCacheError(f"{where} holds inf or nan as the extractor returned it (before any cast); "
                                    "the extractor itself must be fixed")
        peak = float(t[i].abs().max())
        raise FeatureCacheError(f"{where} has values up to |{peak:.4g}|, beyond the {header['dtype']} range "
                                f"(max {torch.finfo(dtype).max:.6g}) of --dtype {header['dtype']}; extract with "
                                "--dtype float32 (or bfloat16: float32's range in half the space)")


def _entry(out: Path, split: str, im_file: str, shape, ratio_pad) -> CacheEntry:
    im_file = str(Path(im_file).resolve())
    st = os.stat(im_file)
    (g0, g1), (p0, p1) = ratio_pad
    return CacheEntry(im_file, _relative_file(split, im_file), (int(shape[0]), int(shape[1])),
                      ((float(g0), float(g1)), (float(p0), float(p1))), st.st_size, st.st_mtime_ns)


def _relative_file(split: str, im_file: str) -> str:
    digest = hashlib.sha1(im_file.encode()).hexdigest()[:8]  # same stem in two folders: two files
    return f"{split}/{Path(im_file).stem}-{digest}.safetensors"


def _file_metadata(header: dict, entry: CacheEntry) -> dict[str, str]:
    meta = {k: json.dumps(header[k]) for k in ("extractor", "weights_hash", "imgsz", "dtype", "flip", "features")}
    meta["entry"] = json.dumps(entry.to_json())
    return meta


def _current_entry(out: Path, split: str, lab: ImageLabels, header: dict) -> CacheEntry | None:
    """The entry of an already extracted, still current file for this image, else None."""
    im_file = str(Path(lab.im_file).resolve())
    path = out / _relative_file(split, im_file)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        made_by = {k: json.loads(meta[k]) for k in ("extractor", "weights_hash", "imgsz", "dtype", "flip", "features")}
        entry = CacheEntry.from_json(json.loads(meta["entry"]))
    except Exception:  # torn or foreign file: extract again
        return None
    same = all(made_by[k] == header[k] for k in made_by)
    return entry if same and not entry.is_stale() else None


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    atomic_write(path, lambda f: f.write(save_safetensors(tensors, metadata=metadata)))


def _write_index(out: Path, header: dict, entries: dict[str, CacheEntry]) -> None:
    text = json.dumps({**header, "entries": [e.to_json() for e in entries.values()]})
    atomic_write(out / INDEX, lambda f: f.write(text.encode("utf-8")))
