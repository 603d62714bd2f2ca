"""Run the real stock YOLOv5 (pip ``yolov5==7.0.14``) as a reference: imported offline with shims (``importer``),
trained in a child process (``runner``) on a box-only export of our data (``data``).

Reading stock *checkpoints* (no stock code involved) is :mod:`yolostitch.weights.stock_checkpoint`."""
