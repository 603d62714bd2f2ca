"""The task registry and a model's tasks: order, lookup, clear errors."""

import pytest

from yolostitch.errors import ConfigError
from yolostitch.models import build_model
from yolostitch.tasks import TASKS, Task, anchor_of, tasks_of
from yolostitch.tasks.registry import Registry


def test_built_in_tasks_register_in_the_order_they_run_print_and_export():
    assert TASKS.names()[:4] == ["det", "seg", "kpt", "cls"]


def test_a_models_tasks_follow_the_registry_whatever_the_yaml_order():
    model = build_model("yolov5n-multitask.yaml", nc=3, kpt_shape=[5, 3])
    tasks = tasks_of(model)
    assert [t.key for t in tasks] == ["det", "seg", "kpt"]
    assert anchor_of(tasks).key == "det" and tasks[2].kpt_shape == (5, 3)
    assert [n for t in tasks for n in t.export_names()] == ["det", "seg_coef", "seg_proto", "kpt"]


def test_a_second_name_for_another_class_is_refused_and_unknown_tasks_name_the_plugin_flag():
    registry = Registry("task")

    class A(Task):
        name = "a"

    class B(Task):
        name = "a"

    registry.register(A)
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(B)
    with pytest.raises(ConfigError, match="--plugin"):
        registry.get("b")


def test_a_model_without_detection_has_no_anchor_task():
    model = build_model("yolov5n-cls.yaml", nc=3)
    with pytest.raises(ConfigError, match="detection head"):
        anchor_of([t for t in tasks_of(model) if not t.anchor], "postprocess")
