"""README promises: its test command is what CI runs; its listed figures are the real ones."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_opens_with_two_setup_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci


def test_readme_parameter_table_matches_the_models():
    from yolostitch import build_model

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for size, params in re.findall(r"\| yolov5(\w) \| ([\d,]+) \|", text)[:3]:
        model = build_model(f"yolov5{size}.yaml")
        assert f"{sum(p.numel() for p in model.parameters()):,}" == params
