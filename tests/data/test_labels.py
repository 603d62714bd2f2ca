"""YOLO txt line forms, validation and partial labels."""

import numpy as np
import pytest

from yolostitch.data.labels import LineError, parse_label_text, parse_line

KPT = [2, 3]


def test_box_line():
    p = parse_line("3 0.5 0.5 0.2 0.4", nc=5, kpt_shape=None)
    assert p.cls == 3 and np.allclose(p.box, [0.5, 0.5, 0.2, 0.4]) and len(p.polygon) == 0 and p.keypoints is None


def test_polygon_line_gives_its_extent_as_box():
    p = parse_line("1 0.1 0.2 0.5 0.2 0.5 0.6", nc=5, kpt_shape=None)
    assert np.allclose(p.box, [0.3, 0.4, 0.4, 0.4]) and p.polygon.shape == (3, 2)


def test_pose_line_and_box_only_instance_in_a_pose_dataset():
    p = parse_line("0 0.5 0.5 0.2 0.2 0.45 0.45 2 0.55 0.55 1", nc=1, kpt_shape=KPT)
    np.testing.assert_allclose(p.keypoints, [[0.45, 0.45, 2], [0.55, 0.55, 1]], rtol=1e-6)
    box_only = parse_line("0 0.5 0.5 0.2 0.2", nc=1, kpt_shape=KPT)
    assert (box_only.keypoints == 0).all()  # a partial label: no keypoints, no keypoint loss


def test_multitask_line_carries_box_keypoints_and_polygon():
    p = parse_line("0 0.5 0.5 0.2 0.2 0.45 0.45 2 0 0 0 0.4 0.4 0.6 0.4 0.6 0.6", nc=1, kpt_shape=KPT)
    assert np.allclose(p.box, [0.5, 0.5, 0.2, 0.2]) and p.polygon.shape == (3, 2)
    assert p.keypoints[1].tolist() == [0, 0, 0]


def test_two_column_keypoints_get_visibility():
    p = parse_line("0 0.5 0.5 0.2 0.2 0.45 0.45 0 0", nc=1, kpt_shape=[2, 2])
    assert p.keypoints[:, 2].tolist() == [2, 0]


def test_slightly_outside_is_clipped():
    p = parse_line("0 0.5 0.5 1.005 0.2", nc=1, kpt_shape=None)
    assert p.box[2] == pytest.approx(1.0)


@pytest.mark.parametrize("line, reason", [
    ("0 0.5 0.5 0.2", "4 values; expected"),
    ("0 0.5 0.5 0.2 0.2 0.1", "6 values"),
    ("7 0.5 0.5 0.2 0.2", r"class 7 is not an integer in \[0, 5\)"),
    ("1.5 0.5 0.5 0.2 0.2", "not an integer"),
    ("-1 0.5 0.5 0.2 0.2", "not an integer"),
    ("0 50 50 20 20", r"outside \[0, 1\].*normalised"),
    ("0 0.5 0.5 0 0.2", "zero width or height"),
    ("0 0.5 0.5 -0.2 0.2", "negative box size"),
    ("0 a 0.5 0.2 0.2", "non-numeric"),
    ("0 nan 0.5 0.2 0.2", "non-finite"),
])
def test_bad_lines(line, reason):
    with pytest.raises(LineError, match=reason):
        parse_line(line, nc=5, kpt_shape=None)


@pytest.mark.parametrize("line, reason", [
    ("0 0.5 0.5 0.2 0.2 0.4 0.4 3 0.5 0.5 2", "visibility must be 0, 1 or 2"),
    ("0 0.5 0.5 0.2 0.2 0.4 0.4 2 5.0 0.5 2", "keypoint coordinates outside"),
    ("0 0.5 0.5 0.2 0.2 0.4 0.4 2 0.5 0.5", "10 values; expected .* 11 \\(box \\+ 2x3 keypoints\\)"),
])
def test_bad_keypoint_lines(line, reason):
    with pytest.raises(LineError, match=reason):
        parse_line(line, nc=1, kpt_shape=KPT)


def test_file_keeps_good_lines_and_reports_bad_and_duplicate_ones():
    text = "0 0.5 0.5 0.2 0.2\n\n9 0.5 0.5 0.2 0.2\n0  0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n"
    lines, problems = parse_label_text(text, "a.txt", nc=2, kpt_shape=None)
    assert [p.cls for p in lines] == [0, 1]
    assert [(p.file, p.reason.split(":")[0]) for p in problems] == [("a.txt", "line 3"), ("a.txt", "line 4")]
    assert "duplicate" in problems[1].reason


def test_polygon_line_in_a_dataset_whose_pose_line_is_odd():
    """kpt_shape [4, 3]: pose lines have 17 values, so a 23-value line could be multi-task or polygon."""
    poly = np.array([[0.1, 0.1], [0.3, 0.12], [0.5, 0.1], [0.52, 0.3], [0.5, 0.5], [0.3, 0.52], [0.1, 0.5],
                     [0.12, 0.3], [0.2, 0.2], [0.25, 0.15], [0.15, 0.25]])
    p = parse_line("1 " + " ".join(f"{v:.2f}" for v in poly.ravel()), nc=2, kpt_shape=[4, 3])
    assert p.polygon.shape == (11, 2) and (p.keypoints == 0).all()
    kpts = "0.5 0.4 2 0.6 0.5 2 0.5 0.6 1 0.4 0.5 0"
    multi = parse_line(f"1 0.5 0.5 0.2 0.2 {kpts} 0.4 0.4 0.6 0.4 0.6 0.6", nc=2, kpt_shape=[4, 3])
    assert multi.polygon.shape == (3, 2) and multi.keypoints[2, 2] == 1
