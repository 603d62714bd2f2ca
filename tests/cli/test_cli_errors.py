"""What the command line does with an error: the user's mistakes (our error types, a missing file) are one line
and exit code 2; a bug, or an accident such as CUDA running out of memory, keeps its traceback."""

import subprocess
import sys

import pytest
import torch

from yolostitch.cli import main
from yolostitch.cli import info
from yolostitch.errors import ConfigError, FlagError, WeightsError, YolostitchError


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_user_mistakes_are_one_line_with_exit_code_2(tmp_path, capsys):
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("nc: 2\nbackbone: 3\n")
    assert one_line_error(capsys, ["info", "--cfg", str(bad_cfg)]).startswith(f"yolostitch info: error: {bad_cfg}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "junk.pt: not a readable checkpoint" in one_line_error(capsys, ["info", "--weights", str(junk)])
    assert "--source: give images" in one_line_error(capsys, ["detect", "--weights", str(junk)])
    for error in (ConfigError, FlagError, WeightsError):  # each a YolostitchError, and of the type it was before
        assert issubclass(error, YolostitchError)
    assert issubclass(FlagError, ValueError) and issubclass(WeightsError, RuntimeError)


@pytest.mark.parametrize("error", [RuntimeError("bug"), ValueError("bug"),
                                   torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")])
def test_internal_errors_keep_their_traceback(monkeypatch, capsys, error):
    def broken(args):
        raise error

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(type(error)) as raised:  # not turned into an exit code: Python prints the traceback
        main(["info"])
    assert raised.value is error
    assert "error:" not in capsys.readouterr().err


def test_an_internal_error_prints_a_traceback_from_the_console_command():
    script = ("import sys; from yolostitch.cli import info, main\n"
              "def broken(args): raise RuntimeError('bug in a command')\n"
              "info.run = broken\n"
              "sys.exit(main(['info']))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "RuntimeError: bug in a command" in out.stderr


def test_help_lists_the_commands_in_plain_text():
    out = subprocess.run([sys.executable, "-m", "yolostitch", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0
    assert "``" not in out.stdout
    assert "Train a model YAML on a dataset (stock YOLOv5 flags)." in " ".join(out.stdout.split())
    for command in ("train", "val", "detect", "extract", "info", "check-data", "export", "compare"):
        assert f"    {command} " in out.stdout, command
