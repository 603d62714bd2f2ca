"""The validation letterbox as a dataset transform: the image through ``ops.letterbox``, its instances (boxes,
polygons, keypoints) moved with it, and ``ratio_pad`` recorded for mapping predictions back.

It reads and writes the label dict the augmentation transforms pass along (``img``, ultralytics ``Instances``,
``ratio_pad``, a batch's ``rect_shape``) exactly as ultralytics' ``LetterBox`` did here before (a test compares
them), so validation figures did not move.
"""

from __future__ import annotations

from typing import Any

from ..ops.letterbox import letterbox


class LetterboxLabels:
    """Letterbox to ``imgsz`` (or the sample's ``rect_shape``, a rect batch's shape) without padding trimmed;
    ``scaleup=False`` (stock validation) never enlarges an image."""

    def __init__(self, imgsz: int, scaleup: bool = False):
        self.imgsz, self.scaleup = imgsz, scaleup

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        img = labels["img"]
        h, w = img.shape[:2]
        labels["img"], plan = letterbox(img, labels.pop("rect_shape", self.imgsz), scaleup=self.scaleup)
        labels["resized_shape"] = plan.target
        top, _, left, _ = plan.edges
        if "instances" in labels:
            instances = labels["instances"]
            instances.convert_bbox(format="xyxy")
            instances.denormalize(w, h)
            instances.scale(plan.gain, plan.gain)
            instances.add_padding(left, top)
        if labels.get("ratio_pad"):  # (h / h0, w / w0) of the resize at loading -> ((gain_h, gain_w), (left, top))
            gain_h, gain_w = labels["ratio_pad"]
            labels["ratio_pad"] = ((gain_h * plan.gain, gain_w * plan.gain), (left, top))
        return labels
