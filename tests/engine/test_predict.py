"""One NMS for every branch: masks and keypoints stay with their box; masks and points map back to the image."""

import torch

from yolostitch.engine.predict import assemble_masks, postprocess, unletterbox_masks, unletterbox_points


def test_nms_keeps_each_rows_coefficients_and_keypoints_with_its_box():
    n, nc, nm, k = 6, 2, 3, 2
    boxes = torch.tensor([[20.0, 20, 10, 10], [21, 20, 10, 10], [60, 60, 8, 8], [80, 30, 6, 6],
                          [61, 60, 8, 8], [5, 5, 4, 4]])  # rows 0/1 and 2/4 overlap
    conf = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.85, 0.01])
    decoded = torch.cat((boxes, conf[:, None], torch.tensor([[1.0, 0.0]]).expand(n, nc)), 1)[None]
    coefficients = torch.arange(n * nm, dtype=torch.float32).view(1, n, nm)  # row r: 3r, 3r+1, 3r+2
    keypoints = torch.arange(n * k * 3, dtype=torch.float32).view(1, n, k * 3) + 1000
    outputs = {"det": (decoded, []), "seg": (coefficients, torch.zeros(1, nm, 4, 4)), "kpt": (keypoints, [])}
    (det,) = postprocess(outputs, conf_thres=0.25, iou_thres=0.5)
    assert det.conf.tolist() == [0.949999988079071, 0.8999999761581421, 0.8500000238418579]
    rows = [3, 0, 4]  # the kept rows, best first; 1 and 2 lose to an overlapping better box; 5 is below conf
    torch.testing.assert_close(det.coefficients, coefficients[0, rows])
    torch.testing.assert_close(det.keypoints, keypoints[0, rows].view(3, k, 3))
    assert det.protos.shape == (nm, 4, 4)


def test_masks_are_cropped_to_their_box():
    protos = torch.zeros(1, 8, 8)
    protos[0] = 10.0  # everywhere foreground before cropping
    masks = assemble_masks(protos, torch.ones(1, 1), torch.tensor([[8.0, 4.0, 20.0, 16.0]]), (32, 32))
    assert masks.shape == (1, 32, 32)
    assert masks[0, 4:16, 8:20].all() and masks.sum() == 12 * 12


def test_letterboxed_masks_and_points_map_back_to_the_original_image():
    # a 100x200 (h x w) image letterboxed into 64x64: gain 0.32, 16 px of padding top and bottom
    ratio_pad = ((0.32, 0.32), (0.0, 16.0))
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 16:32, 0:32] = True  # the top-left quarter of the image area
    back = unletterbox_masks(mask, (100, 200), ratio_pad)
    assert back.shape == (1, 100, 200)
    assert back[0, :50, :100].float().mean() > 0.95 and back[0, 50:, :].sum() + back[0, :, 100:].sum() < 200
    points = torch.tensor([[[32.0, 32.0, 0.9], [0.0, 16.0, 0.5]]])
    torch.testing.assert_close(unletterbox_points(points, (100, 200), (64, 64), ratio_pad),
                               torch.tensor([[[100.0, 50.0, 0.9], [0.0, 0.0, 0.5]]]))


def test_image_region_is_exactly_the_letterboxed_image():
    """Inference pads and masks are cut back with one rounding: with odd paddings (the extra pixel at the
    bottom/right) the region holds every image pixel and no padding pixel."""
    import numpy as np

    from yolostitch.ops.letterbox import PAD_VALUE, letterbox
    from yolostitch.engine.predict import image_region

    for h0, w0 in [(100, 173), (61, 61), (37, 250), (250, 37)]:  # paddings 22, 0, 13 (odd) rows and columns
        image = np.zeros((h0, w0, 3), np.uint8)  # black: every padding pixel is PAD_VALUE, every image one 0
        padded, plan = letterbox(image, 128, stride=32, auto=True)
        rows, cols = image_region(padded.shape[:2], (h0, w0), plan.ratio_pad)
        inside = np.zeros(padded.shape[:2], bool)
        inside[rows, cols] = True
        assert (padded[inside] == 0).all() and (padded[~inside] == PAD_VALUE).all(), (h0, w0)
