"""Image classes: which classes appear in the image (multi-label), from the box labels; no NMS involved."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.draw import text_list
from .base import Meter, SharedTargets, Task
from .registry import register_task

PRESENT = 0.5  # a class is predicted present above this probability


class ImageClassMeter(Meter):
    """Per (image, class) accuracy at p = 0.5, and the share of images with every class right."""

    def __init__(self):
        self.right = self.all = self.exact = self.images = 0

    def add_batch(self, output: Any, batch: dict[str, Any]) -> None:
        present = torch.zeros_like(output, dtype=torch.bool).cpu()
        present[batch["batch_idx"], batch["cls"].long()] = True
        right = (output.cpu() > PRESENT) == present
        self.right += int(right.sum())
        self.all += right.numel()
        self.exact += int(right.all(1).sum())
        self.images += len(output)

    def results(self) -> dict[str, Any] | None:
        if not self.all:
            return None
        return {"accuracy": self.right / self.all, "exact": self.exact / max(self.images, 1)}


@register_task
class ImageClasses(Task):
    name = "cls"
    terms = ("img_cls",)
    default_gains = {"img_cls": 0.05}
    evolve_ranges = {"img_cls": (1, 0.005, 0.5)}
    level_scaled_gains = False
    result_key = "cls"
    draw_layer = 40

    def loss_terms(self, output: Any, batch: dict[str, Any], shared: SharedTargets) -> dict[str, Tensor]:
        present = torch.zeros_like(output)
        present[batch["batch_idx"].to(shared.device), batch["cls"].to(shared.device).long()] = 1.0
        return {"img_cls": F.binary_cross_entropy_with_logits(output, present)}

    def attach(self, det: Any, columns: Tensor | None, output: Any, image: int) -> None:
        det.fields["image_classes"] = output[image]

    def unaugment(self, output: Any, scale: float, flip_width: int | None) -> Tensor:
        return output  # which classes an image holds does not change with its size or a mirror

    def original_fields(self, det: Any, size: Sequence[int], shape0: Sequence[int], ratio_pad: Any
                        ) -> dict[str, Tensor]:
        return {"image_classes": det.image_classes.float().cpu()}

    def meter(self, names: dict[int, str]) -> Meter:
        return ImageClassMeter()

    @classmethod
    def flat_metrics(cls, results: dict[str, Any]) -> dict[str, float]:
        if cls.result_key not in results:
            return {}
        r = results[cls.result_key]
        return {"cls_accuracy": r["accuracy"], "cls_exact": r["exact"]}

    @classmethod
    def report_lines(cls, results: dict[str, Any]) -> list[str]:
        if cls.result_key not in results:
            return []
        r = results[cls.result_key]
        return [f"image classes: {r['accuracy']:.3f} right per image and class, "
                f"{r['exact']:.3f} of images entirely right"]

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], style: dict[str, Any], top_k: int = 5) -> None:
        """The ``top_k`` image-level classes with their probabilities, one per line, in the top-left corner."""
        probs = result.get("image_classes")
        if probs is None or not len(probs):
            return
        p = torch.as_tensor(probs).float()
        names = style["names"]
        text_list(image, [f"{names.get(i, str(i))} {float(p[i]):.2f}" for i in p.argsort(descending=True)[:top_k].tolist()],
                  style["lw"])
