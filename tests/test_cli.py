"""The ``beamline`` command: every job is a subcommand, every subcommand answers --help quietly
and maps its outcome onto the one exit-code table; importing a package changes nothing in the
importing process."""

import importlib
import os
import subprocess
import sys

import pytest

from beamline import cli
from models import exit_codes
from tests.conftest import ROOT

NOISE = ("cuda", "cuInit", "oneDNN", "absl::InitializeLog", "GCSFileSystem", "apitools",
         "cpu_feature_guard")


def leaves(group=cli.COMMANDS, words=()):
    for name, entry in group.items():
        if isinstance(entry, cli.Command):
            yield (*words, name), entry
        else:
            yield from leaves(entry, (*words, name))


LEAVES = dict(leaves())
# A mistake a user can make with each command, refused with exit 2 before any work is done:
# an unknown flag for argparse commands; for Beam pipelines (which ignore flags they do not
# know) an out-of-range option.
BEAM_MISTAKE = ["--sample_rate", "7"]
MISTAKES = {words: (BEAM_MISTAKE if entry.pipeline else ["--no_such_option"])
            for words, entry in LEAVES.items()}
MISTAKES[("credit", "compare")] = ["--on_beam", *BEAM_MISTAKE]
MISTAKES[("sql", "render")] = ["no_such_model"]


def test_the_table_names_entry_points_that_exist():
    for words, command in LEAVES.items():
        module, function = command.target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), words


def test_help_lists_every_command_and_the_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for group in cli.COMMANDS:
        assert f"  {group} " in text
    for code in exit_codes.TABLE:
        assert f"  {code}  " in text
    assert cli.main(["radar", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"  {leaf} " in text for leaf in cli.COMMANDS["radar"])


def test_no_command_or_an_unknown_one_is_a_usage_error(capsys):
    assert cli.main([]) == exit_codes.REFUSED
    assert cli.main(["credit", "nonsense"]) == exit_codes.REFUSED
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


@pytest.mark.parametrize("words", sorted(MISTAKES), ids=" ".join)
def test_each_command_refuses_a_mistake_with_exit_2_and_one_line(words, capsys, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*words, *MISTAKES[words]]) == exit_codes.REFUSED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error" in err.lower(), err


def test_a_bug_is_exit_1_with_its_traceback(monkeypatch, capsys):
    def broken(argv):
        raise KeyError("a bug")

    monkeypatch.setattr(sys.modules[__name__], "broken_entry", broken, raising=False)
    command = cli.Command(f"{__name__}:broken_entry", "a command with a bug")
    assert cli.run(command, "beamline broken", []) == exit_codes.UNEXPECTED
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'a bug'" in err


def test_a_command_sees_its_own_arguments_in_sys_argv(monkeypatch):
    seen = {}

    def entry(argv):
        seen["argv"], seen["sys"] = argv, list(sys.argv)
        return 3

    monkeypatch.setattr(sys.modules[__name__], "recording_entry", entry, raising=False)
    command = cli.Command(f"{__name__}:recording_entry", "records")
    assert cli.run(command, "beamline credit train", ["--epochs", "2"]) == 3
    # What manifests record as the training command: the arguments after the command's name.
    assert seen == {"argv": ["--epochs", "2"], "sys": ["beamline credit train", "--epochs", "2"]}


def test_importing_a_package_leaves_the_process_alone():
    code = ("import logging, sys; import pipelines.options, transforms.common.outputs, "
            "models.registry, services.processes; "
            "from models.quiet import _QuietTensorFlowFinder; "
            "assert not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path); "
            "assert not logging.getLogger().filters; print('untouched')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "untouched" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("words", sorted(LEAVES), ids=" ".join)
def test_help_is_quiet(words):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "BEAMLINE_VERBOSE_STARTUP")}
    beamline = os.path.join(os.path.dirname(sys.executable), "beamline")
    done = subprocess.run([beamline, *words, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "usage" in output.lower() and "exit status:" in output
    noisy = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy


@pytest.mark.slow
def test_a_python_m_alias_is_quiet_too():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "models.credit.train", "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert not [line for line in (done.stdout + done.stderr).splitlines()
                if any(n in line for n in NOISE)]
