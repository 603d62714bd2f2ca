"""README promises: its test command is what CI runs; its listed figures are the real ones; its command lines
(and those of docs/*.md) parse as written."""

import re
import shlex
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


SCRIPTS = ("train", "val", "detect", "extract", "export", "compare")


def readme_commands(path: Path = ROOT / "README.md") -> list[list[str]]:
    """yolostitch sub-command argv of every command line in a Markdown file's code blocks: ``python train.py ...``,
    ``yolostitch info ...``, ``torchrun ... train.py ...`` (bash blocks, and ``$ `` lines of console blocks)."""
    text = path.read_text(encoding="utf-8")
    commands = []
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
    lines += [line[2:] for block in re.findall(r"```console\n(.*?)```", text, flags=re.S)
              for line in block.splitlines() if line.startswith("$ ")]  # console blocks: commands, not output
    for line in lines:
        for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                scripts = [i for i, w in enumerate(words) if w.removesuffix(".py") in SCRIPTS and w.endswith(".py")]
                if scripts and words[0] in ("python", "torchrun"):
                    i = scripts[0]
                    commands.append([words[i].removesuffix(".py"), *words[i + 1:]])
                elif words[:1] == ["yolostitch"]:
                    commands.append(words[1:])
    return commands


def test_readme_command_lines_parse_as_written():
    from yolostitch.cli.main import build_parser

    commands = readme_commands()
    assert {c[0] for c in commands} >= {*SCRIPTS, "info", "check-data"}
    for doc in sorted((ROOT / "docs").glob("*.md")):
        commands += readme_commands(doc)
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            raise AssertionError(f"README command does not parse: {shlex.join(argv)}") from None
