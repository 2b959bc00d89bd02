"""The Dockerfile: hadolint, and the conventions the chart relies on (no image can be built here)."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest
import yaml

from deploy.deploykit import CHART, ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"
# What must never be in the final image: compilers and build tool chains.
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|python3?-dev|libc6?-dev|cargo|rustc)\b")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda v: args[v.group(1)], m.group(1))
            stages.append(Stage(m.group(2) or str(len(stages)), base))
        elif not stages and op == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif stages:
            stages[-1].instructions.append((op, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    by_name = {s.name: s for s in stages}
    out = [stage]
    while out[0].base in by_name:
        out.insert(0, by_name[out[0].base])
    return out


def final_instructions(stages: list[Stage]) -> list[tuple[str, str]]:
    return [i for s in chain(stages, stages[-1]) for i in s.instructions]


def test_hadolint() -> None:
    run(tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE))


def test_final_stage_is_python_slim_without_build_tools(stages: list[Stage]) -> None:
    runtime = chain(stages, stages[-1])
    assert stages[-1].name == "runtime"
    assert runtime[0].base.startswith("python:3.11-slim"), runtime[0].base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    for op, arg in final_instructions(stages):
        if op == "RUN":
            assert not BUILD_TOOLS.search(arg), f"build tools in the final image: {arg}"
            assert "pip install" not in arg and "apt-get install" not in arg, arg
        if op == "COPY":
            assert arg.startswith("--from=build "), f"the final image takes only the built virtualenv: {arg}"
    # The builder is where the package is installed.
    build = next(s for s in stages if s.name == "build")
    assert any(op == "RUN" and "pip install" in arg for op, arg in build.instructions)


def test_runs_cloudtriggers_run_as_the_charts_non_root_user(stages: list[Stage]) -> None:
    instructions = final_instructions(stages)
    last = {op: arg for op, arg in instructions}  # the last of each instruction wins
    user, _, group = last["USER"].partition(":")
    assert user.isdigit() and int(user) != 0, "USER must be numeric for runAsNonRoot to check it"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(user) == values["podSecurityContext"]["runAsUser"]
    assert group == str(values["podSecurityContext"]["runAsGroup"])
    # A passwd entry for the uid: getpass.getuser() (kopf's identity) fails without one.
    assert any(op == "RUN" and "useradd" in arg and f"--uid {user}" in arg for op, arg in instructions)
    assert json.loads(last["ENTRYPOINT"]) == ["cloudtriggers"]
    assert json.loads(last["CMD"]) == ["run"]
    assert last["EXPOSE"] == str(values["httpPort"])


def test_nothing_is_written_outside_tmp_at_run_time(stages: list[Stage]) -> None:
    env = " ".join(arg for op, arg in final_instructions(stages) if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    last = {op: arg for op, arg in final_instructions(stages)}
    assert last["WORKDIR"] == "/tmp"


def test_dev_stage_for_tilt_matches_the_runtime_paths(stages: list[Stage]) -> None:
    dev = next(s for s in stages if s.name == "dev")
    assert dev.base == stages[-1].base  # the same base as the runtime image
    tiltfile = (ROOT / "Tiltfile").read_text()
    assert "target='dev'" in tiltfile
    site = re.search(r"SITE_PACKAGES = '([^']+)'", tiltfile)
    assert site and site.group(1) == "/opt/cloudtriggers/lib/python3.11/site-packages"
    assert any(
        op == "COPY" and "/opt/cloudtriggers /opt/cloudtriggers" in arg for op, arg in dev.instructions
    )


def test_dockerignore_sends_only_what_the_build_copies(stages: list[Stage]) -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    build = next(s for s in stages if s.name == "build")
    copied = {src.rstrip("/") for op, arg in build.instructions if op == "COPY" for src in arg.split()[:-1]}
    assert copied == included == {"pyproject.toml", "README.md", "operator"}
