"""The command line: one place per setting (flags generated from the dataclasses), the commands named,
`emotion-vit` installed, and commands that load only what they need."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from emotion_vit.adapt import AdaptOptions
from emotion_vit.cli import COMMANDS, app_parser
from emotion_vit.flags import add_flags, flag_fields, from_flags
from emotion_vit.service import AppSettings


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_every_app_setting_is_a_flag_with_help_and_default():
    help_text = " ".join(app_parser().format_help().split())  # argparse wraps lines by the terminal width
    for field in flag_fields(AppSettings):
        flag = ("--no-" if field.default is True else "--") + field.name.replace("_", "-")
        assert flag in help_text and field.metadata.get("help"), field.name
    assert "--shared-key" not in help_text and "--geometry" not in help_text  # a secret; an object
    assert "(default: 0.6)" in help_text and "default: 127.0.0.1" in help_text


def test_flags_give_back_the_settings():
    args = app_parser().parse_args(["--score-threshold", "0.4", "--no-flip-tta", "--align", "--detector", "yunet"])
    settings = from_flags(AppSettings, args)
    assert (settings.score_threshold, settings.flip_tta, settings.align) == (0.4, False, True)
    assert settings.detector == "yunet"
    assert settings.smoothing == AppSettings().smoothing and settings.geometry == AppSettings().geometry
    with pytest.raises(SystemExit):
        app_parser().parse_args(["--detector", "haar"])  # choices come from the detector backends


def test_adapt_flags_build_the_options():
    parser = argparse.ArgumentParser()
    add_flags(parser, AdaptOptions)
    options = from_flags(AdaptOptions, parser.parse_args(["--method", "lora", "--steps", "12", "--include-mlp"]))
    assert options == dataclasses.replace(AdaptOptions(), method="lora", steps=12, include_mlp=True)


def test_a_field_without_a_flag_type_must_say_so():
    @dataclasses.dataclass
    class Odd:
        shape: tuple = (1, 2)

    with pytest.raises(TypeError, match="no flag for type"):
        add_flags(argparse.ArgumentParser(), Odd)


def test_train_py_names_its_commands_and_keeps_its_old_forms():
    out = run(sys.executable, "train.py", "--help")
    assert out.returncode == 0 and all(command in out.stdout for command in COMMANDS)
    assert len(out.stdout.splitlines()) < 20  # not 690 lines of Trainer options
    trainer_help = run(sys.executable, "train.py", "train", "--help")
    assert "--learning_rate" in trainer_help.stdout and "--chunk_hours" in trainer_help.stdout
    adapt_help = run(sys.executable, "train.py", "adapt", "--help")
    assert "--false-positive-rate" in adapt_help.stdout and "(default: auto)" in adapt_help.stdout


def test_the_emotion_vit_command_is_installed_and_loads_lazily():
    script = Path(sys.executable).parent / "emotion-vit"
    assert script.is_file(), "pip install -r requirements.txt installs the project (-e .) and its command"
    out = run(str(script), "evaluate", "--help")
    assert out.returncode == 0 and "--flip-tta" in out.stdout
    probe = ("import sys\nfrom emotion_vit.cli import main\ntry:\n    main(['push', '--help'])\nexcept SystemExit:\n"
             "    pass\nprint(sorted(m for m in ('torch', 'gradio', 'peft', 'datasets') if m in sys.modules))")
    assert run(sys.executable, "-c", probe).stdout.strip().endswith("[]")
    unknown = run(str(script), "fly")
    assert unknown.returncode != 0 and "unknown command 'fly'" in unknown.stderr
