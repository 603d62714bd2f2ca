"""TensorBoard curves in the run folder, as stock YOLOv5 writes them, when ``tensorboard`` is installed: each
epoch's results.csv values as scalars, the training batch images and, at the end, results.png. Optional:
without tensorboard (or without a working one) nothing is written and training goes on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2

LOGGER = logging.getLogger(__name__)


class TensorBoardLog:
    """A ``SummaryWriter`` on ``save_dir``, or a no-op when tensorboard cannot be imported."""

    def __init__(self, save_dir: Path, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # not installed: TensorBoard is never required
            return
        try:
            self.writer = SummaryWriter(str(save_dir))
        except Exception as e:  # an installed but broken tensorboard must not stop training
            LOGGER.warning("TensorBoard: not writing curves (%s: %s)", type(e).__name__, e)
            return
        LOGGER.info(f"TensorBoard: start with 'tensorboard --logdir {Path(save_dir).parent}', view at "
                    "http://localhost:6006/")

    @property
    def active(self) -> bool:
        return self.writer is not None

    def scalars(self, row: dict[str, Any], epoch: int) -> None:
        """One epoch's results.csv row (its ``epoch`` column is the step)."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, float(value), epoch)

    def image(self, path: Path, epoch: int) -> None:
        """An image file written for the run (train_batch0.jpg, results.png), tagged by its name."""
        if self.writer is None:
            return
        image = cv2.imread(str(path))
        if image is not None:
            self.writer.add_image(Path(path).stem, image[..., ::-1].copy(), epoch, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
