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
    for provider in ("gitlab", "ack", "swr"):
        assert f"{provider}: Ready, external id" in text
        assert f"{provider}: deleted Trigger" in text and f"{provider}: deleted Trigger" in text
    for provider in ("gitlab", "ack"):  # SWR triggers have no secret outputs
        assert f"{provider}: output Secret" in text and "holds keys: token, url" in text
    assert "swr: output Secret" not in text
    assert text.count("provider triggers left: 0") == 3
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
    for command in ("run", "validate", "plan", "crd", "demo", "sandbox", "version"):
        assert command in out


def test_sandbox_command_serves_every_provider(tmp_path: Path) -> None:
    import socket
    import time

    import requests

    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    args = ["--gitlab-port", str(ports[0]), "--ack-port", str(ports[1]), "--swr-port", str(ports[2])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudtriggers.cli", "sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        up: set[int] = set()
        while len(up) < 3 and time.monotonic() < deadline:
            for port in ports:
                try:
                    requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                    up.add(port)
                except requests.ConnectionError:
                    pass
            time.sleep(0.1)
        assert up == set(ports)
        # GitLab answers its API with a 401 without a token, like the real one.
        assert requests.get(f"http://127.0.0.1:{ports[0]}/api/v4/user", timeout=2).status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    assert str(ports[0]) in out and str(ports[1]) in out and str(ports[2]) in out
