"""Where a training step's time goes, measured from outside an unmodified training loop.

Used by ``train_parity.py`` in both children (ours and stock), with the same instrumentation on each side, so
the small timing overhead it adds (a few ``perf_counter`` calls per step) does not tilt the comparison:

* the loop: a ``tqdm`` subclass installed as the training module's ``tqdm`` name times its iteration, from the
  first request for a batch to exhaustion (a generator resumes only when the consumer asks for the next item,
  so this spans the loop body too), and the time spent waiting for each next batch (``data``: the loader, plus
  the progress bar's own per-item work);
* forward: the top-level model's ``forward``, on that one model object only (identity check), so the EMA copy
  (a deepcopy, validated outside the loop) and any other instance of the class are not counted. The class's
  ``forward`` is wrapped rather than hooks added to the instance: hooks would be deep-copied into the EMA and
  pickled into stock's whole-model checkpoints;
* loss: the loss class's ``__call__`` (target assignment and the loss terms);
* backward: ``torch.Tensor.backward``.

Everything but ``forward``/``loss``/``backward``/``data`` is ``other``: input conversion, warm-up schedule,
gradient clipping, the optimizer step, the EMA update, per-batch logging and the first batches' plots.
Only time inside the training loop counts (validation runs outside it).
"""

from __future__ import annotations

import time
from typing import Any, Callable

PARTS = ("data", "forward", "loss", "backward")
_ABSENT = object()


class StepProfile:
    """Seconds per part of the training loop, summed over epochs, plus per-epoch loop records."""

    def __init__(self) -> None:
        self.active = False
        self.target: Any = None
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.epochs: list[dict[str, Any]] = []
        self.hooked: set[str] = set()
        self._classes: set[type] = set()  # model classes whose forward is wrapped
        self._undo: list[tuple[Any, str, Any]] = []  # (owner, attribute, original) for restore()

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._undo.append((owner, name, owner.__dict__.get(name, _ABSENT) if isinstance(owner, type)
                           else getattr(owner, name)))
        setattr(owner, name, value)

    def restore(self) -> None:
        """Undo every patch (the benchmark's children just exit; tests share their process)."""
        for owner, name, original in reversed(self._undo):
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._undo.clear()

    # --- installation ---------------------------------------------------------------------------------------

    def tqdm(self, base: type, count: Callable[[Any], int], cpu_s: Callable[[], dict[int, float]]) -> type:
        """A subclass of ``base`` that times its iteration (see the module doc); ``count(item)`` = images in a
        batch, ``cpu_s()`` = CPU seconds so far per process of the tree (empty if unknown)."""
        profile = self

        class TimedTqdm(base):
            def __iter__(self):
                start, cpu, images, wait = time.perf_counter(), cpu_s(), 0, 0.0
                items = super().__iter__()
                profile.active = True
                try:
                    while True:
                        t = time.perf_counter()
                        try:
                            item = next(items)
                        except StopIteration:
                            break
                        wait += time.perf_counter() - t
                        images += count(item)
                        yield item
                finally:
                    profile.active = False
                end_cpu = cpu_s()
                profile.seconds["data"] += wait
                profile.epochs.append({
                    "loop_s": time.perf_counter() - start, "images": images, "data_s": wait,
                    "cpu_s": sum(t - cpu.get(pid, 0.0) for pid, t in end_cpu.items()) if end_cpu else None})

        return TimedTqdm

    def wrap_builder(self, module: Any, *names: str) -> bool:
        """Make the first of ``module.<names>`` that exists report the model it returns (see ``watch``)."""
        for name in names:
            build = getattr(module, name, None)
            if callable(build):
                def watched(*args, _build=build, **kwargs):
                    return self.watch(_build(*args, **kwargs))

                self._patch(module, name, watched)
                return True
        return False

    def watch(self, model: Any) -> Any:
        """Time ``model``'s forward calls made inside the loop (this object only)."""
        self.target = model
        cls = type(model)
        if cls not in self._classes:
            self._classes.add(cls)
            forward = cls.forward

            def timed_forward(module, *args, **kwargs):
                if module is not self.target:
                    return forward(module, *args, **kwargs)
                return self._timed("forward", forward, module, *args, **kwargs)

            self._patch(cls, "forward", timed_forward)
            self.hooked.add("forward")
        return model

    def time_loss(self, loss_class: type | None) -> None:
        if loss_class is None:
            return
        call = loss_class.__call__

        def timed_call(loss, *args, **kwargs):
            return self._timed("loss", call, loss, *args, **kwargs)

        self._patch(loss_class, "__call__", timed_call)
        self.hooked.add("loss")

    def time_backward(self) -> None:
        import torch

        backward = torch.Tensor.backward

        def timed_backward(tensor, *args, **kwargs):
            return self._timed("backward", backward, tensor, *args, **kwargs)

        self._patch(torch.Tensor, "backward", timed_backward)
        self.hooked.add("backward")

    def _timed(self, part: str, fn: Callable, *args, **kwargs):
        if not self.active:
            return fn(*args, **kwargs)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[part] += time.perf_counter() - start

    # --- results --------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Loop seconds and each part's seconds (None where the part could not be hooked)."""
        loop = sum(e["loop_s"] for e in self.epochs)
        parts = {p: (self.seconds[p] if p == "data" or p in self.hooked else None) for p in PARTS}
        known = sum(v for v in parts.values() if v is not None)
        return {"loop_s": loop, **{f"{p}_s": v for p, v in parts.items()}, "other_s": loop - known,
                "steps_hooked": sorted(self.hooked)}
