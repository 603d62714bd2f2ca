"""Training batches through shared slots hold exactly what the plain DataLoader gives, lent or copied, and fall back
to the usual path when a field does not fit or no slot is free."""

from __future__ import annotations

import torch

from yolostitch.data import shared_batches
from yolostitch.data.config import load_data_config
from yolostitch.data.dataset import MultiTaskDataset, collate, worker_init
from yolostitch.data.scan import scan_split
from yolostitch.data.shared_batches import BatchSlots, SlotCollate, SlotLoader, training_loader

FIELDS = ("img", "cls", "has_mask", "bboxes", "masks", "keypoints", "batch_idx")


def _dataset(tiny_shapes):
    cfg = load_data_config(tiny_shapes)
    labels = scan_split(cfg.splits["train"], cfg.nc, cfg.kpt_shape).labels
    return MultiTaskDataset(labels, imgsz=64, augment=True, kpt_shape=cfg.kpt_shape, flip_idx=cfg.flip_idx)


def _plain(dataset, epochs=2):
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, collate_fn=collate,
                                         worker_init_fn=worker_init, persistent_workers=True,
                                         generator=torch.Generator().manual_seed(7))
    return [batch for _ in range(epochs) for batch in loader]


def _through(loader, epochs=2):
    """Each batch's fields cloned as it arrives (a lent batch is only valid until the next is drawn)."""
    return [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for _ in range(epochs) for batch in loader]


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in FIELDS:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_slotted_batches_equal_plain_batches_lent_or_copied(tiny_shapes):
    dataset = _dataset(tiny_shapes)
    expected = _plain(dataset)
    assert sum(len(b["masks"]) for b in expected) > 0
    for borrow in (False, True):
        loader = training_loader(dataset, 3, 2, generator=torch.Generator().manual_seed(7), worker_init_fn=worker_init,
                                 borrow=borrow)
        assert loader.slots is not None and len(loader) == len(expected) // 2
        _assert_same(_through(loader), expected)
        assert not loader.slots.busy.any()  # every slot freed once the loop is over


def test_a_lent_batch_keeps_its_slot_until_the_next_is_drawn(tiny_shapes):
    dataset = _dataset(tiny_shapes)
    loader = training_loader(dataset, 3, 2, generator=torch.Generator().manual_seed(7), worker_init_fn=worker_init,
                             borrow=True)
    slots, buffer = loader.slots, loader.slots.buffer
    for batch in loader:
        start = buffer.data_ptr()
        slot = (batch["img"].data_ptr() - start) // slots.capacity
        assert 0 <= slot < len(slots.busy) and slots.busy[slot] == 1  # a view of its slot, which stays taken
        break  # leaving the loop frees the slot it held
    assert slots.busy[slot] == 0


def test_fields_that_do_not_fit_and_workers_without_a_free_slot_take_the_usual_path(tiny_shapes, monkeypatch):
    dataset = _dataset(tiny_shapes)
    expected = _plain(dataset, epochs=1)
    small = BatchSlots(2, 3, capacity=3 * 3 * 64 * 64)  # three images fit, their masks not (a smaller last batch's may)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2,
                                         collate_fn=SlotCollate(small), worker_init_fn=worker_init,
                                         generator=torch.Generator().manual_seed(7))
    seen = []
    original = small.take

    def take(batch, borrow=False):
        seen.append([field[0] for field in batch[shared_batches.SLOT_KEY][1]])
        return original(batch, borrow)

    small.take = take
    _assert_same(_through(SlotLoader(loader, small), epochs=1), expected)
    assert all(fields[0] == "img" for fields in seen) and sum(fields == ["img"] for fields in seen) >= 2

    monkeypatch.setattr(shared_batches, "WAIT_SECONDS", 0.05)
    full = BatchSlots(2, 3, capacity=2**20)
    full.busy.fill_(1)  # as if every slot were held: the workers give up on them and take the usual path
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2,
                                         collate_fn=SlotCollate(full), worker_init_fn=worker_init,
                                         generator=torch.Generator().manual_seed(7))
    _assert_same(_through(SlotLoader(loader, full), epochs=1), expected)
