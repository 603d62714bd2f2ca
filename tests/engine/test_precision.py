"""--amp: the precision policy per device and CPU, fp32 kept exactly under ``off``, bf16 inference close to fp32,
and a bf16 training run keeping fp32 weights, EMA and losses.

The bf16 cases force the policy (``choose_precision(..., cpu_bf16=True)``), so they run on any CPU: without native
bf16 the arithmetic is emulated, slower but the same numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.cli.amp import AMP_CHOICES
from yolostitch.engine import precision as prec
from yolostitch.engine.detector import Detector
from yolostitch.engine.postprocess import scale_boxes
from yolostitch.engine.predict import postprocess
from yolostitch.errors import FlagError
from yolostitch.weights import save_checkpoint

BF16 = prec.choose_precision("auto", "cpu", cpu_bf16=True)


# --- the policy ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("amp, device, cpu_bf16, dtype, channels_last, scaled", [
    ("auto", "cpu", True, torch.bfloat16, True, False),   # native bf16: autocast, no loss scaling
    ("auto", "cpu", False, None, False, False),           # emulated bf16 would be slower than fp32
    ("auto", "cuda", False, torch.float16, False, True),  # stock's AMP: fp16 + GradScaler
    ("auto", "cuda", True, torch.float16, False, True),
    ("auto", "mps", True, None, False, False),
    ("off", "cpu", True, None, False, False),
    ("off", "cuda", False, None, False, False),
])
def test_policy_per_device(amp, device, cpu_bf16, dtype, channels_last, scaled):
    p = prec.choose_precision(amp, device, cpu_bf16)
    assert (p.dtype, p.channels_last, p.scales_loss, p.enabled) == (dtype, channels_last, scaled, dtype is not None)
    if device != "cuda":  # (a CUDA scaler on a machine without CUDA warns and disables itself)
        assert not p.grad_scaler().is_enabled()


def test_bad_amp_value_names_the_flag():
    with pytest.raises(FlagError, match=r"--amp 'bf16'.*auto, off"):
        prec.choose_precision("bf16", "cpu", True)
    assert tuple(AMP_CHOICES) == prec.AMP_MODES  # the CLI's choices are the policy's modes


def test_native_bf16_only_from_bf16_flags(tmp_path):
    assert prec.native_cpu_bf16({"avx512f", "avx512bw", "avx512_bf16"})
    assert prec.native_cpu_bf16({"amx_tile", "amx_bf16"})
    assert not prec.native_cpu_bf16({"avx2", "avx512f", "avx512bw", "avx512_vnni"})  # AVX-512 alone emulates
    assert not prec.native_cpu_bf16(set())
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert prec.cpu_flags(x86) >= {"avx512f", "avx512_bf16"} and prec.native_cpu_bf16(prec.cpu_flags(x86))
    assert "bf16" in prec.cpu_flags(arm) and not prec.native_cpu_bf16(prec.cpu_flags(arm))
    assert prec.cpu_flags(tmp_path / "missing") == frozenset()


def test_detected_policy_follows_this_cpu():
    native = prec.native_cpu_bf16(prec.detected_cpu_flags()) and prec.onednn_bf16()
    assert prec.precision_for("auto", "cpu").dtype == (torch.bfloat16 if native else None)
    assert prec.precision_for("off", "cpu") == prec.choose_precision("off", "cpu", native)


# --- inference ----------------------------------------------------------------------------------------------


def _conv_dtypes(model: nn.Module) -> tuple[list[torch.dtype], list]:
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    return seen, hooks


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (60, 100, 3), np.uint8)


def test_amp_off_gives_exactly_the_fp32_outputs():
    model = build_model("yolov5n-multitask.yaml", nc=3, kpt_shape=[4, 3]).eval()
    detector = Detector(model, imgsz=96, conf_thres=0.0, device="cpu", amp="off")
    seen, hooks = _conv_dtypes(model)
    result = detector(_image())
    assert seen and set(seen) == {torch.float32}
    # the reference: the same letterboxed input through the bare model, outside any policy
    from yolostitch.ops.letterbox import letterbox

    padded, plan = letterbox(_image(), 96, detector.stride, auto=True)
    ratio_pad = plan.ratio_pad
    x = torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        det = postprocess(model(x), 0.0, detector.iou_thres, nc=3, max_det=detector.max_det)[0]
    for h in hooks:
        h.remove()
    assert torch.equal(result["conf"], det.conf) and torch.equal(result["cls"], det.cls.long())
    assert torch.equal(result["boxes"], scale_boxes(det.boxes, x.shape[2:], _image().shape[:2], ratio_pad))
    assert torch.equal(result["keypoints"][..., 2], det.keypoints[..., 2])
    assert len(result["boxes"]) == len(det) > 0


def test_bf16_outputs_close_to_fp32_and_decoded_in_fp32():
    torch.manual_seed(0)
    model = build_model("yolov5n-multitask.yaml", nc=3, kpt_shape=[4, 3]).eval()
    x = torch.rand(2, 3, 128, 160)
    with torch.no_grad():
        ref = model(x)
        seen, hooks = _conv_dtypes(model)
        with BF16.autocast():
            out = model(BF16.prepare(x))
        for h in hooks:
            h.remove()
    assert torch.bfloat16 in seen  # the convolutions did run in bf16
    decoded, ref_decoded = out["det"][0], ref["det"][0]
    assert decoded.dtype == torch.float32 and out["kpt"][0].dtype == torch.float32  # decoded from fp32 maps
    # decoding an fp32 map exactly: box centres (up to 160 px here) carry no bf16 rounding of their own
    head = model.model[model.heads["det"]]
    raw = out["det"][1]
    assert all(m.dtype == torch.float32 for m in raw)
    torch.testing.assert_close(decoded, head.flatten([head.decode(i, m) for i, m in enumerate(raw)]))
    # and the network's bf16 rounding moves boxes by well under a pixel, scores by < 0.01
    assert (decoded[..., :4] - ref_decoded[..., :4]).abs().max() < 1.0
    assert (decoded[..., 4:] - ref_decoded[..., 4:]).abs().max() < 0.01
    assert out["seg"][1].dtype == torch.bfloat16  # the prototypes come out of autocast as they are ...
    floated = prec.to_float(out)  # ... and to_float gives the loss / NMS / metrics fp32 throughout
    assert floated["seg"][1].dtype == torch.float32 and floated["det"][0] is decoded
    torch.testing.assert_close(floated["seg"][1], ref["seg"][1], atol=0.05, rtol=0.05)


def test_detector_bf16_matches_fp32_detections():
    torch.manual_seed(0)
    model = build_model("yolov5n.yaml", nc=3).eval()
    fp32 = Detector(model, imgsz=96, conf_thres=0.0, max_det=20, device="cpu", amp="off")(_image(1))
    detector = Detector(model, imgsz=96, conf_thres=0.0, max_det=20, device="cpu", amp="off")
    detector.precision = BF16
    bf16 = detector(_image(1))
    assert bf16["boxes"].dtype == torch.float32 and len(bf16["boxes"]) == len(fp32["boxes"]) == 20
    assert (bf16["conf"] - fp32["conf"]).abs().max() < 0.01
    assert detector.precision.describe() == "bf16 autocast, channels-last (CPU with native bf16)"


def test_val_cli_amp_flag(tmp_path, tiny_shapes, capsys):
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=5))
    args = ["val", "--weights", str(weights), "--data", str(tiny_shapes), "--imgsz", "64", "--batch-size", "2",
            "--workers", "0", "--project", str(tmp_path / "val")]
    assert main([*args, "--amp", "off"]) == 0
    assert "fp32 (--amp off)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "val" / "exp" / "metrics.json").read_text())
    assert metrics["precision"] == "fp32 (--amp off)"
    with pytest.raises(SystemExit):  # argparse refuses another value, naming the choices
        main([*args, "--amp", "bf16"])
    assert "invalid choice: 'bf16'" in capsys.readouterr().err


def test_bf16_val_of_real_weights_close_to_fp32(shared_weights, shared_datasets, tmp_path):
    """yolov5n.pt on 16 coco128 images at 320: bf16 metrics within 0.01 of fp32 (the full figure is in the README)."""
    from yolostitch.data.scan import scan_split
    from yolostitch.engine.validator import evaluate, flat_metrics, val_loader
    from yolostitch.weights import load_model

    model = load_model(shared_weights / "yolov5n.pt")
    labels = scan_split([shared_datasets / "coco128" / "images" / "train2017"], 80).labels[:16]
    loader = val_loader(labels, 320, 8, 32, workers=0)
    fp32 = flat_metrics(evaluate(model, loader, torch.device("cpu"), precision=prec.choose_precision("off", "cpu", True)))
    bf16 = flat_metrics(evaluate(model, loader, torch.device("cpu"), precision=BF16))
    assert fp32["box_map"] > 0.2
    assert abs(bf16["box_map"] - fp32["box_map"]) < 0.01 and abs(bf16["box_map50"] - fp32["box_map50"]) < 0.01


# --- training -----------------------------------------------------------------------------------------------


def test_bf16_training_keeps_fp32_weights_ema_and_loss(options, monkeypatch):
    from yolostitch.engine import trainer
    from yolostitch.losses import ComputeLoss

    monkeypatch.setattr(trainer, "precision_for", lambda amp, device: BF16)
    conv_dtypes: set[torch.dtype] = set()
    loss_inputs: list[tuple[set, bool]] = []
    call = ComputeLoss.__call__

    def spy(self, outputs, batch):
        floats = set()
        for t in _tensors(outputs):
            floats.add(t.dtype)
        loss_inputs.append((floats, torch.is_autocast_enabled("cpu")))
        loss, terms = call(self, outputs, batch)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        return loss, terms

    monkeypatch.setattr(ComputeLoss, "__call__", spy)
    hook = nn.modules.module.register_module_forward_hook(
        lambda m, _i, out: conv_dtypes.add(out.dtype) if isinstance(m, nn.Conv2d) else None)
    try:
        run = trainer.train(options(cfg="yolov5n-multitask.yaml", epochs=1))
    finally:
        hook.remove()
    assert torch.bfloat16 in conv_dtypes  # training and validation forwards ran in bf16
    assert loss_inputs and all(dtypes == {torch.float32} and not autocast for dtypes, autocast in loss_inputs)
    ckpt = torch.load(f"{run['save_dir']}/weights/last.pt", map_location="cpu", weights_only=True)
    for state in (ckpt["model"], ckpt["train_state"]["model"]):  # EMA weights, trained weights
        floats = [v for v in state.values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in floats)
    assert ckpt["opt"]["amp"] == "auto"
    assert np.isfinite(run["box_map"])


def _tensors(x):
    if torch.is_tensor(x):
        if x.is_floating_point():
            yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
