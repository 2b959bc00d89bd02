"""The README's first command and the CLI's small commands."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtriggers import __version__
from cloudtriggers.cli import main
from cloudtriggers.crd import render_crd
from cloudtriggers.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_reaches_ready_deletes_and_never_prints_the_token() -> None:
    out = io.StringIO()
    assert run_demo(timeout=20, out=out) == 0
    text = out.getvalue()
    for provider in ("gitlab", "ack"):
        assert f"{provider}: Ready, external id" in text
        assert f"{provider}: output Secret" in text and "holds keys: token, url" in text
        assert f"{provider}: deleted Trigger" in text and "provider triggers left: 0" in text
    assert "glptt-" not in text and "token=" not in text


def test_crd_and_version_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == render_crd()
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"cloudtriggers {__version__}"


def test_console_script_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cloudtriggers.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("run", "crd", "demo", "sandbox", "version"):
        assert command in out
