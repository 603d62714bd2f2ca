"""Library code logs; the command line shows those records as the bare lines the library used to print."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from yolostitch.cli.console import ConsoleHandler, show_library_log
from yolostitch.cli.main import main

PACKAGE = Path(__file__).resolve().parents[2] / "yolostitch"
# library modules that still print (the engine's training/evaluation/inference output is being reorganised apart)
STILL_PRINTING = {"engine/trainer.py", "engine/validator.py", "engine/predict.py", "engine/detector.py",
                  "engine/plots.py", "engine/metrics.py", "engine/postprocess.py", "losses/compute.py",
                  "export/wrapper.py", "data/check.py"}  # check.py writes its report to the stream it is given


def test_info_to_stdout_and_warnings_to_stderr_as_bare_lines(capsys):
    show_library_log()
    show_library_log()  # a second command in the same process: still one handler
    logger = logging.getLogger("yolostitch.some.module")
    logger.info("extracting %s: %d images", "x", 3)
    logger.debug("not shown")
    logger.warning("warning: a/b holds maps of c")
    out, err = capsys.readouterr()
    assert out == "extracting x: 3 images\n" and err == "warning: a/b holds maps of c\n"
    assert sum(isinstance(h, ConsoleHandler) for h in logging.getLogger("yolostitch").handlers) == 1


def test_a_command_shows_what_the_library_logs(capsys):
    assert main(["info", "--cfg", "yolov5n.yaml"]) == 0  # the layer table comes from models.summary's logger
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["from", "n", "params", "module", "arguments", "out", "(c,", "stride)"]
    assert lines[-1].startswith("yolov5n summary: 214 layers, 1,872,157 parameters")


def test_library_modules_log_instead_of_printing():
    printing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("cli/") or name in STILL_PRINTING:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.append(f"{name}:{node.lineno}")
    assert printing == []
