"""Training batches cross from the loader's worker processes through shared buffers allocated once.

A DataLoader worker hands each batch to the training process in shared memory. torch's collate (and stock
YOLOv5's) puts every batch in a new shared-memory segment, and the kernel then allocates and clears each of its
pages on first touch: measured here, ~18 ms for a batch of 16 images at 640 px against ~2 ms for stacking them into
memory already in use, about a millisecond of CPU per image (a quarter of the mosaic's cost).

Here the main process creates, before the workers start, a few fixed slots per worker in one shared buffer, so
every process maps the same pages. A worker stacks the batch's images and masks (while they fit) into its next
free slot and returns where they lie. :class:`SlotLoader` either copies them into the main process's own memory
and frees the slot at once, or, for a consumer that is done with a batch when it draws the next (the training
loop), lends them and frees the slot when the next batch is drawn: a copy of ~25 MB per batch, at first touch of
freshly allocated pages, costs the main process about what the slots save the workers. The batches hold the same
values as without slots (a test compares them). A field that does not fit, or a worker that finds no free slot in
time, takes the usual path.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader

from .dataset import MultiTaskDataset, collate

LOGGER = logging.getLogger("yolostitch")
SLOT_FIELDS = ("img", "masks")  # the large fields: images, and per-instance masks
SLOT_KEY = "_slot"  # a batch's entry saying which slot holds which fields
WAIT_SECONDS = 1.0  # a worker waits this long for a free slot, then takes the usual path


class BatchSlots:
    """``per_worker`` slots of ``capacity`` bytes for each of ``workers`` workers, and their busy flags, in shared
    memory. Create before the workers start (fork: they inherit the mapping)."""

    def __init__(self, workers: int, per_worker: int, capacity: int):
        self.workers, self.per_worker, self.capacity = workers, per_worker, int(capacity)
        self.buffer = torch.empty((workers * per_worker, self.capacity), dtype=torch.uint8).share_memory_()
        self.busy = torch.zeros(workers * per_worker, dtype=torch.int32).share_memory_()
        self._turn = 0  # this worker's next slot (each forked worker counts on its own copy)
        self._given_up = False

    def acquire(self, worker: int) -> int | None:
        """The worker's next slot once the main process has freed it; None after ``WAIT_SECONDS``, and from then on
        (a batch the main process dropped unread, e.g. an epoch left early, keeps its slot)."""
        if self._given_up:
            return None
        slot = worker * self.per_worker + self._turn % self.per_worker
        self._turn += 1
        deadline = time.monotonic() + WAIT_SECONDS
        while self.busy[slot]:
            if time.monotonic() > deadline:
                self._given_up = True
                LOGGER.debug("loader worker %d: no free batch slot in %.1f s; its batches take the usual path",
                             worker, WAIT_SECONDS)
                return None
            time.sleep(0.0005)
        self.busy[slot] = 1
        return slot

    def take(self, batch: dict[str, Any], borrow: bool = False) -> tuple[dict[str, Any], int | None]:
        """Main process: the batch with its slotted fields back in place, and the slot to free with
        :meth:`release` once they are no longer used (None: nothing to free). Copies them and frees the slot
        at once unless ``borrow``: then they are views of the slot."""
        ref = batch.pop(SLOT_KEY, None)
        if ref is None:
            return batch, None
        slot, fields = ref
        row = self.buffer[slot]
        for key, offset, dtype, shape in fields:
            view = row[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
            batch[key] = view if borrow else view.clone()
        if borrow:
            return batch, slot
        self.release(slot)
        return batch, None

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self.busy[slot] = 0


class SlotCollate:
    """``collate`` that, in a worker, writes the large fields into the worker's next free slot."""

    def __init__(self, slots: BatchSlots, fn: Callable[..., dict[str, Any]] = collate):
        self.slots, self.fn = slots, fn

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        slot = self.slots.acquire(info.id) if info is not None else None
        if slot is None:
            return self.fn(samples)
        row, used, fields = self.slots.buffer[slot], 0, []

        def place(key: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor | None:
            nonlocal used
            n = math.prod(shape) * dtype.itemsize
            offset = -(-used // 64) * 64  # 64-byte aligned, as the allocator aligns tensors
            if key not in SLOT_FIELDS or offset + n > self.slots.capacity:
                return None
            used = offset + n
            fields.append((key, offset, dtype, tuple(shape)))
            return row[offset:offset + n].view(dtype).view(shape)

        try:
            batch = self.fn(samples, place=place)
        except BaseException:
            self.slots.busy[slot] = 0
            raise
        if not fields:
            self.slots.busy[slot] = 0
            return batch
        for key, *_ in fields:
            del batch[key]  # the main process reads them from the slot
        batch[SLOT_KEY] = (slot, fields)
        return batch


class SlotLoader:
    """A DataLoader whose batches come through :class:`BatchSlots`; iterating it gives ordinary batches.

    With ``borrow``, a batch's images and masks are valid until the next batch is drawn (or the loop ends): keep a
    ``.clone()`` of what must outlive that. Other attributes (``dataset``, ``sampler``...) are the DataLoader's."""

    def __init__(self, loader: DataLoader, slots: BatchSlots | None, borrow: bool = False):
        self.loader, self.slots, self.borrow = loader, slots, borrow

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.slots is None:
            yield from self.loader
            return
        held = None
        try:
            for batch in self.loader:
                batch, slot = self.slots.take(batch, self.borrow)
                self.slots.release(held)
                held = slot
                yield batch
        finally:
            self.slots.release(held)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)


def training_loader(dataset: Any, batch_size: int, workers: int, shuffle: bool = True, sampler: Any = None,
                    generator: torch.Generator | None = None, worker_init_fn: Callable[[int], None] | None = None,
                    prefetch_factor: int = 2, borrow: bool = False,
                    collate_fn: Callable[..., dict[str, Any]] = collate) -> SlotLoader:
    """The training DataLoader (persistent workers, ``collate_fn``: ours, or e.g. ``--quad``'s), its images and
    masks through shared slots when it has workers and the shared-memory file system has room for them;
    ``borrow``: see :class:`SlotLoader`."""
    slots = None
    capacity = _slot_bytes(dataset, batch_size)
    if workers > 0 and capacity:
        per_worker = prefetch_factor + 2  # a worker's batches in flight, the one being made, the one lent out
        if _shared_memory_room() > 2 * workers * per_worker * capacity:
            slots = BatchSlots(workers, per_worker, capacity)
    collate_fn = SlotCollate(slots, collate_fn) if slots is not None else collate_fn
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
                        num_workers=workers, collate_fn=collate_fn, worker_init_fn=worker_init_fn, generator=generator,
                        persistent_workers=workers > 0, prefetch_factor=prefetch_factor if workers > 0 else None)
    return SlotLoader(loader, slots, borrow)



def _slot_bytes(dataset: Any, batch_size: int) -> int:
    """Bytes a slot needs: a batch of ``imgsz`` square uint8 images, and half as much again for masks."""
    imgsz = getattr(dataset, "imgsz", None)
    if not isinstance(dataset, MultiTaskDataset) or not isinstance(imgsz, int) or dataset.rect_shapes is not None:
        return 0
    images = batch_size * 3 * imgsz * imgsz
    return images + (images // 2 if getattr(dataset, "use_masks", False) else 0)


def _shared_memory_room() -> int:
    """Free bytes of the shared-memory file system (0 where there is none to ask)."""
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return 0
    return st.f_bavail * st.f_frsize
