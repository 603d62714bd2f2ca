"""detect: sources, inference on a tiny multi-task model with rigged heads, drawing, label files, coordinates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from yolostitch import build_model
from yolostitch.data.labels import parse_line
from yolostitch.engine.annotate import draw
from yolostitch.engine.detector import detect
from yolostitch.engine.label_files import label_lines
from yolostitch.engine.sources import list_sources
from yolostitch.errors import FlagError
from yolostitch.ops.letterbox import letterbox
from yolostitch.weights import load_model, save_checkpoint

NAMES = {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "hexagon"}
K = 5  # keypoints per instance (kpt_shape [5, 3]); the rigged model makes keypoints 0-2 visible, 3-4 not


def rig(model) -> None:
    """Make the heads' outputs input-independent: on the stride-32 level, anchor 0 of every cell detects a
    'triangle' box centred on the cell (conf ~1), with a mask filling the box and all keypoints at the
    cell centre; nothing anywhere else."""
    with torch.no_grad():
        det = model.model[model.heads["det"]]
        for level, conv in enumerate(det.m):
            conv.weight.zero_()
            b = conv.bias.view(det.na, det.no)
            b.fill_(-20.0)
            if level == det.nl - 1:
                b[0, :2], b[0, 2:4] = 0.0, -1.5  # centre of the cell; (2 sigmoid(-1.5))^2 x anchor ~ 0.13 anchor
                b[0, 4], b[0, 5 + 1] = 10.0, 10.0
        if "seg" in model.heads:
            seg = model.model[model.heads["seg"]]
            for conv in seg.m:
                conv.weight.zero_()
                conv.bias.fill_(1.0)
            cv3 = seg.proto.cv3  # prototypes constant 5 -> mask logits positive everywhere in the box
            cv3.conv.weight.zero_()
            cv3.bn.weight.zero_()
            cv3.bn.bias.fill_(5.0)
        if "kpt" in model.heads:
            kpt = model.model[model.heads["kpt"]]
            for conv in kpt.m:
                conv.weight.zero_()
                b = conv.bias.view(kpt.na, K, 3)
                b[..., :2] = 0.5  # (2 * 0.5 - 0.5 + cell) * stride = cell centre
                b[..., 2] = -5.0
                b[:, :3, 2] = 5.0


@pytest.fixture(scope="module")
def multitask_weights(tmp_path_factory):
    model = build_model("yolov5n-multitask.yaml", nc=5, kpt_shape=[K, 3])
    model.names = dict(NAMES)
    rig(model)
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "multitask.pt", model)


@pytest.fixture(scope="module")
def det_weights(tmp_path_factory):
    model = build_model("yolov5n.yaml", nc=5)
    model.names = dict(NAMES)
    rig(model)
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "det.pt", model)


@pytest.fixture()
def images(tmp_path):
    """Three small readable images (one non-square) and one corrupt file, in one directory."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.jpg": (64, 64), "b.png": (48, 64), "c.jpg": (64, 40)}.items():
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    (folder / "notes.md").write_text("not media: ignored")
    return folder


def run(weights, source, tmp_path, **kw):
    kw = {"imgsz": 64, "device": "cpu", "project": tmp_path / "runs", **kw}
    return detect(weights, source, **kw)


def test_letterbox_pads_to_stride_multiple():
    padded, plan = letterbox(np.zeros((60, 100, 3), np.uint8), 128, 32, auto=True)
    (gain, _), (px, py) = plan.ratio_pad
    assert padded.shape == (96, 128, 3)  # 100x60 -> 128x77, height padded up to 96
    assert gain == pytest.approx(1.28) and px == 0 and py == pytest.approx(9.5)
    assert (padded[:9] == 114).all() and (padded[-10:] == 114).all() and (padded[9:86] == 0).all()


def test_height_width_letterbox_is_stocks(stock_yolo):
    """detect's ``--imgsz H W`` letterbox (rect, ``auto``) gives stock's image for non-square targets too."""
    from yolov5.utils.augmentations import letterbox as stock_letterbox

    rng = np.random.default_rng(0)
    for shape in ((60, 100), (100, 60), (37, 250)):
        image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
        for target in ((64, 128), (128, 64), (96, 320)):
            ours, plan = letterbox(image, target, 32, auto=True)
            stock, ratio, pad = stock_letterbox(image, target, stride=32, auto=True)
            assert np.array_equal(ours, stock), (shape, target)
            assert plan.ratio_pad[1] == pytest.approx(pad)


def test_sources(images, tmp_path):
    files = list_sources(images)
    assert [p.name for p in files] == ["a.jpg", "b.png", "broken.jpg", "c.jpg"]
    assert [p.name for p in list_sources(images / "*.jpg")] == ["a.jpg", "broken.jpg", "c.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text("images/a.jpg\n\n" + str(images / "c.jpg") + "\n")  # relative to the list, and absolute
    assert [p.name for p in list_sources(listing)] == ["a.jpg", "c.jpg"]
    for url in ("https://example.com/a.jpg", "rtsp://camera/stream", "HTTP://x/y.mp4"):
        with pytest.raises(ValueError, match="URLs and streams are not supported"):
            list_sources(url)
    with pytest.raises(ValueError, match="webcams are not supported"):
        list_sources("0")
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        list_sources(tmp_path / "missing_dir")
    with pytest.raises(FileNotFoundError, match="no images or videos match"):
        list_sources(tmp_path / "*.bmp")
    listing.write_text("images/a.jpg\nimages/gone.jpg\n")
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        list_sources(listing)
    listing.write_text("images/*.png\nimages\nhttps://example.com/x.jpg\n")
    with pytest.raises(ValueError, match="list.txt: https://example.com/x.jpg: URLs and streams"):
        list_sources(listing)
    listing.write_text("images/*.png\nimages\n")  # globs and directories in a list expand
    assert [p.name for p in list_sources(listing)] == ["b.png", "a.jpg", "b.png", "broken.jpg", "c.jpg"]
    weird = images / "x[1].jpg"  # glob characters in an existing name: the file itself
    cv2.imwrite(str(weird), np.zeros((8, 8, 3), np.uint8))
    assert list_sources(weird) == [weird]
    with pytest.raises(ValueError, match="not an image or video"):
        list_sources(images / "notes.md")


def test_url_source_rejected_before_loading_weights(tmp_path):
    with pytest.raises(ValueError, match="nothing is downloaded"):
        detect(tmp_path / "no-such-weights.pt", "https://ultralytics.com/images/zidane.jpg")


def test_detect_saves_drawings_and_labels_and_skips_corrupt(multitask_weights, images, tmp_path, capsys):
    results = run(multitask_weights, images, tmp_path, save=True, save_txt=True, verbose=True)
    out, err = capsys.readouterr()
    assert "broken.jpg" in err and "skipping" in err
    assert [r["im_file"].rsplit("/", 1)[-1] for r in results] == ["a.jpg", "b.png", "c.jpg"]
    assert "image 2/4" in out and "64x64 4 triangles," in out and "Results saved to" in out
    assert "Speed:" in out and "3 labels saved to" in out

    run_dir = tmp_path / "runs" / "exp"
    for r in results:
        h0, w0 = r["shape"]
        assert len(r["boxes"]) >= 1 and (r["cls"] == 1).all() and (r["conf"] > 0.9).all()
        assert r["masks"].shape == (len(r["boxes"]), h0, w0) and r["masks"].any()
        assert r["keypoints"].shape == (len(r["boxes"]), K, 3)
        assert (r["boxes"][:, [0, 2]] <= w0).all() and (r["boxes"][:, [1, 3]] <= h0).all()
        drawn = cv2.imread(r["save_path"])
        assert drawn is not None and drawn.shape == (h0, w0, 3)
    assert not (run_dir / "broken.jpg").exists()

    lines = (run_dir / "labels" / "a.txt").read_text().splitlines()
    assert len(lines) == len(results[0]["boxes"])
    for line in lines:
        values = line.split()
        assert (len(values) - 1 - 4 - K * 3) % 2 == 0 and len(values) >= 1 + 4 + K * 3 + 6  # box, kpts, polygon
        parsed = parse_line(line, nc=5, kpt_shape=[K, 3])  # our own label reader takes it back
        assert parsed.cls == 1 and len(parsed.polygon) >= 3
        assert parsed.keypoints[:3, 2].tolist() == [2, 2, 2] and parsed.keypoints[3:].tolist() == [[0, 0, 0]] * 2
        # the mask fills the box, so its contour's extent is the box's
        lo, hi = parsed.polygon.min(0), parsed.polygon.max(0)
        assert np.allclose((lo + hi) / 2, parsed.box[:2], atol=0.05)


def test_save_conf_and_box_only_lines(det_weights, images, tmp_path):
    results = run(det_weights, images / "a.jpg", tmp_path, save_txt=True, save_conf=True)
    assert len(results) == 1 and "masks" not in results[0] and "keypoints" not in results[0]
    run_dir = tmp_path / "runs" / "exp"
    assert not (run_dir / "a.jpg").exists()  # save_txt only: no drawing
    for line in (run_dir / "labels" / "a.txt").read_text().splitlines():
        values = [float(v) for v in line.split()]
        assert len(values) == 6 and values[0] == 1 and 0.9 < values[5] <= 1
        assert all(0 <= v <= 1 for v in values[1:5])


def test_class_filter_and_nothing_written_without_save(det_weights, images, tmp_path):
    assert all(len(r["cls"]) == 0 for r in run(det_weights, images, tmp_path, classes=[0, 2]))
    assert all(len(r["cls"]) > 0 for r in run(det_weights, images, tmp_path, classes=[1]))
    assert not (tmp_path / "runs").exists()


def test_mask_drawn_inside_boxes(multitask_weights, images, tmp_path):
    (result,) = run(multitask_weights, images / "b.png", tmp_path)
    image = cv2.imread(str(images / "b.png"))
    plain = {k: result[k] for k in ("boxes", "conf", "cls")}
    without = draw(image, plain, NAMES, line_thickness=1, hide_labels=True)
    with_masks = draw(image, {**plain, "masks": result["masks"]}, NAMES, line_thickness=1, hide_labels=True)
    assert (image == cv2.imread(str(images / "b.png"))).all()  # drawing works on a copy
    for x1, y1, x2, y2 in result["boxes"].round().int().tolist():
        inner = (slice(y1 + 2, y2 - 2), slice(x1 + 2, x2 - 2))
        assert (without[inner] == image[inner]).all()  # a box outline leaves the inside alone
        assert (with_masks[inner] != image[inner]).any(-1).mean() > 0.9  # the mask tints it
    outside = ~result["masks"].any(0).numpy()
    assert (with_masks[outside] == without[outside]).all()


def test_keypoints_and_masks_map_to_original_pixels(multitask_weights, tmp_path, monkeypatch):
    """A detection, mask and keypoint placed at the centre of the letterboxed input come back at the centre of
    a non-square original (100 x 60 -> input 128 x 96: gain 1.28, 9.5 px of padding above and below)."""
    model = load_model(multitask_weights)
    nm = model.model[model.heads["seg"]].nm
    seen = {}

    def forward(x):
        h, w = x.shape[2:]
        seen["shape"] = (h, w)
        row = torch.zeros(1, 1, 10)
        row[0, 0, :4] = torch.tensor([w / 2, h / 2, 25.6, 12.8])  # 20 x 10 px in the original
        row[0, 0, 4], row[0, 0, 5 + 3] = 0.9, 1.0  # a 'star'
        kpts = torch.tensor([[w / 2, h / 2, 0.9], [w / 2 + 6.4, h / 2, 0.9], [0, 0, 0.1], [0, 0, 0.1], [0, 0, 0.1]])
        coefficients, protos = torch.ones(1, 1, nm), torch.ones(1, nm, h // 4, w // 4)
        return {"det": (row, []), "seg": (coefficients, protos), "kpt": (kpts.view(1, 1, -1), [])}

    monkeypatch.setattr(model, "forward", forward)
    image = np.full((60, 100, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "wide.png"), image)
    (r,) = detect(model, tmp_path / "wide.png", imgsz=128, device="cpu")
    assert seen["shape"] == (96, 128) and r["input_shape"] == (96, 128) and r["shape"] == (60, 100)
    assert r["cls"].tolist() == [3]
    assert r["boxes"][0].tolist() == pytest.approx([40, 25, 60, 35], abs=0.1)
    # 0.08 px off: the 60 px height became 77 px (not 76.8) in the letterbox
    assert r["keypoints"][0, 0, :2].tolist() == pytest.approx([50, 30], abs=0.1)
    assert r["keypoints"][0, 1, :2].tolist() == pytest.approx([55, 30], abs=0.1)
    ys, xs = np.nonzero(r["masks"][0].numpy())
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((40, 59, 25, 34), abs=1)

    drawn = draw(image, r, NAMES, line_thickness=1, hide_labels=True)
    changed = (drawn != image).any(-1)
    assert changed[30, 50] and changed[30, 55]  # keypoint dots (and the mask) around the centre
    assert not changed[:20].any() and not changed[40:].any()  # nothing above or below the box
    dots_only = draw(image, {**r, "masks": None, "boxes": r["boxes"][:0], "conf": r["conf"][:0],
                             "cls": r["cls"][:0]}, NAMES, line_thickness=2)
    dots = (dots_only != image).any(-1)
    assert dots[30, 50] and dots[30, 55]
    ys, xs = np.nonzero(dots)  # just the two dots: the 3 invisible keypoints (at the corner) are not drawn
    assert 26 <= ys.min() and ys.max() <= 34 and 46 <= xs.min() and xs.max() <= 59


def test_image_classes_written_top_left():
    image = np.zeros((120, 160, 3), np.uint8)
    result = {"boxes": torch.zeros(0, 4), "conf": torch.zeros(0), "cls": torch.zeros(0, dtype=torch.long),
              "image_classes": torch.tensor([0.1, 0.9, 0.2, 0.0, 0.05])}
    drawn = draw(image, result, NAMES, line_thickness=1)
    changed = (drawn != image).any(-1)
    assert changed[:20, :40].any() and not changed[80:, 100:].any()


def test_segmentation_only_lines_are_polygons():
    mask = torch.zeros(1, 50, 80, dtype=torch.bool)
    mask[0, 10:30, 20:60] = True
    result = {"shape": (50, 80), "boxes": torch.tensor([[20.0, 10, 60, 30]]), "conf": torch.tensor([0.8]),
              "cls": torch.tensor([4]), "masks": mask}
    (line,) = label_lines(result)
    values = line.split()
    assert len(values) % 2 == 1 and len(values) >= 7
    parsed = parse_line(line, nc=5, kpt_shape=None)
    assert parsed.cls == 4 and parsed.box.tolist() == pytest.approx([0.49375, 0.39, 0.4875, 0.38], abs=0.02)
    result["masks"] = torch.zeros_like(mask)  # an empty mask keeps its box
    assert label_lines(result, save_conf=True) == ["4 0.5 0.4 0.5 0.4 0.8"]


def test_video_source(det_weights, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    results = run(det_weights, video, tmp_path, save=True, save_txt=True)
    assert [r["frame"] for r in results] == [1, 2, 3]
    run_dir = tmp_path / "runs" / "exp"
    cap = cv2.VideoCapture(str(run_dir / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    assert sorted(p.name for p in (run_dir / "labels").iterdir()) == ["clip_1.txt", "clip_2.txt", "clip_3.txt"]


def test_vid_stride_reads_every_nth_frame(det_weights, tmp_path):
    """--vid-stride 3 on 8 frames: frames 3 and 6, each the frame itself (its grey level names it)."""
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(8):
        writer.write(np.full((48, 64, 3), 25 * (i + 1), np.uint8))
    writer.release()
    from yolostitch.engine.sources import iter_frames

    frames = [(frame, int(round(image.mean()))) for _, _, frame, _, image, _ in iter_frames([video], vid_stride=3)]
    assert [f for f, _ in frames] == [3, 6] and all(abs(level - 25 * f) <= 2 for f, level in frames)
    assert [r["frame"] for r in run(det_weights, video, tmp_path, vid_stride=3)] == [3, 6]
    with pytest.raises(FlagError, match="--vid-stride"):
        list(iter_frames([video], vid_stride=0))


def test_visualize_saves_each_layers_maps(det_weights, images, tmp_path):
    """--visualize: per image, a picture per layer before Detect (24 in yolov5n), from the layer's own output."""
    from yolostitch.engine.visualize import FeatureRecorder, feature_grid

    run(det_weights, images / "b.png", tmp_path, visualize=True)
    files = sorted((tmp_path / "runs" / "exp" / "b").glob("*.png"), key=lambda p: int(p.name.split("_")[0][5:]))
    assert len(files) == 24 and files[0].name == "stage0_Conv_features.png" and files[-1].name == "stage23_C3_features.png"

    model = build_model("yolov5n.yaml", nc=5).eval()
    recorder = FeatureRecorder(model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
        torch.testing.assert_close(recorder.maps[0][1], model.model[0](x)[0])
    recorder.close()
    assert not model.model[0]._forward_hooks  # hooks removed

    grid = feature_grid(torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4))
    assert grid.shape == (66, 2 * 88 + 2, 3)  # 3 x 4 maps enlarged 22x to reach 64 px, 2 channels side by side
    lowest, highest = (cv2.applyColorMap(np.array([[v]], np.uint8), cv2.COLORMAP_VIRIDIS)[0, 0] for v in (0, 255))
    assert (grid[0, 0] == lowest).all() and (grid[-1, 87] == highest).all()  # each channel scaled to its range


def test_view_img_without_a_display_is_refused_before_anything_runs(det_weights, images, tmp_path, monkeypatch):
    """OpenCV aborts the process when it cannot open a window; --view-img refuses first, naming the cause."""
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(FlagError, match="--view-img .*no display"):
        run(det_weights, images, tmp_path, view_img=True)
    assert not (tmp_path / "runs").exists()


def test_save_crop_cuts_each_detection_as_stock(det_weights, images, tmp_path, stock_yolo):
    """--save-crop: one file per detection under crops/<class>/, numbered as stock numbers them, each cut exactly
    as stock's save_one_box cuts it (grown 2 % + 10 px, clipped)."""
    from yolov5.utils.plots import save_one_box

    from yolostitch.engine.crops import crop_box

    (result,) = run(det_weights, images / "c.jpg", tmp_path, save_crop=True, save=False)
    crops = sorted((tmp_path / "runs" / "exp" / "crops" / "triangle").glob("*.jpg"))
    assert len(result["cls"]) > 1 and len(crops) == len(result["cls"])
    assert crops[0].name == "c.jpg" and crops[1].name == "c2.jpg"  # stock's increment_path numbering
    image = cv2.imread(str(images / "c.jpg"))
    boxes = [*result["boxes"].tolist(), [-5.0, 3.2, 20.7, 80.0], [30.5, 60.1, 39.9, 63.9]]  # and at the borders
    for box in boxes:
        stock = save_one_box(box, image, BGR=True, save=False)
        assert np.array_equal(crop_box(image, box), stock), box
