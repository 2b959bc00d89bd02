"""Redaction in logs, and settings from environment and flags."""

from __future__ import annotations

import io
import json
import logging

import kopf
import pytest

from cloudtriggers.cli import build_parser, run_settings
from cloudtriggers.logs import RedactingFilter, configure, register_secret
from cloudtriggers.settings import Settings


def _emit(fmt: str, *args: object, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = configure("json", "debug", stream=stream)
    log = logging.getLogger("test.redaction")
    try:
        if exc:
            try:
                raise RuntimeError(*args)
            except RuntimeError:
                log.exception(fmt)
        else:
            log.warning(fmt, *args)
    finally:
        logging.getLogger().removeHandler(handler)
    return stream.getvalue()


def test_token_shapes_and_registered_secrets_are_scrubbed() -> None:
    register_secret("s3cr3t-access-key-value")
    out = _emit(
        "token %s key %s jwt %s",
        "glptt-" + "a" * 40,
        "s3cr3t-access-key-value",
        "eyJhbGciOiJIUzI1Ni.eyJzdWIiOiIx.sig",
    )
    assert "glptt-aaaa" not in out and "s3cr3t-access-key-value" not in out and "eyJhbGci" not in out
    assert json.loads(out)["message"].count("***") == 3


def test_every_registered_secret_is_scrubbed_among_thousands_and_overlaps_leave_no_fragment() -> None:
    from cloudtriggers.logs import scrub

    tokens = [f"tok-{i:06d}-{'x' * (i % 7)}" for i in range(5000)]  # seven lengths
    register_secret(*tokens)
    line = f"a {tokens[17]} b {tokens[4242]}{tokens[3]} c"
    assert scrub(line) == "a *** b ****** c"
    register_secret("overlap-AAAA", "AAAA-overlap-tail")  # one ends where the other starts
    out = scrub("x overlap-AAAA-overlap-tail y")
    assert "overlap" not in out and "AAAA" not in out and "tail" not in out
    assert out.startswith("x ***") and out.endswith(" y")
    assert scrub("nothing to hide here") == "nothing to hide here"


def test_exceptions_are_scrubbed_too() -> None:
    register_secret("another-secret-value-123")
    out = _emit("failed", "header PRIVATE-TOKEN: another-secret-value-123", exc=True)
    assert "another-secret-value-123" not in out and "RuntimeError" in out


def test_filter_keeps_plain_messages() -> None:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)
    assert RedactingFilter().filter(rec) and rec.getMessage() == "plain text"


def test_kopfs_per_event_success_lines_are_left_out_at_info_and_shown_at_debug() -> None:
    # kopf logs "Handler ... succeeded" for every watch event of every Trigger; ours say what was done.
    def lines(level: str) -> list[str]:
        stream = io.StringIO()
        handler = configure("text", level, stream=stream)
        try:
            logging.getLogger("kopf.objects").info("[apps/web] Handler 'watch_triggers' succeeded.")
            logging.getLogger("kopf.objects").warning(
                "[apps/web] Handler 'watch_triggers' failed temporarily"
            )
            logging.getLogger("cloudtriggers.reconcile").info("apps/web: Created: created gitlab trigger 7")
            logging.getLogger("kopf.activities.startup").info("Activity 'start' succeeded.")
        finally:
            logging.getLogger().removeHandler(handler)
        return [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]

    assert lines("info") == [
        "[apps/web] Handler 'watch_triggers' failed temporarily",
        "apps/web: Created: created gitlab trigger 7",
        "Activity 'start' succeeded.",
    ]
    assert len(lines("debug")) == 4 and "[apps/web] Handler 'watch_triggers' succeeded." in lines("debug")
    assert lines("error") == []


def test_settings_from_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTRIGGERS_RESYNC_PERIOD", "5m")
    monkeypatch.setenv("CLOUDTRIGGERS_NAMESPACES", "apps, ci")
    monkeypatch.setenv("CLOUDTRIGGERS_RATE", "3")
    args = build_parser().parse_args(["run", "--rate", "7", "--log-format", "json", "--http-port", "9090"])
    s = run_settings(args)
    assert s.resync_period == 300 and s.namespaces == ["apps", "ci"]
    assert s.rate == 7 and s.log_format == "json" and s.http_port == 9090
    args = build_parser().parse_args(["run", "-n", "only", "--resync-period", "1h30m"])
    s = run_settings(args)
    assert s.namespaces == ["only"] and s.resync_period == 5400


def test_the_environment_is_read_as_pydantic_settings_read_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any case; tuples as JSON, lists comma-separated, the rest validated as the field says; unknown
    CLOUDTRIGGERS_* variables ignored; a given value wins; assignments validated."""
    monkeypatch.setenv("CLOUDTRIGGERS_TRANSIENT_BACKOFF", "[0.2, 2.0]")
    monkeypatch.setenv("cloudtriggers_workers", "5")
    monkeypatch.setenv("CLOUDTRIGGERS_LEADER_ELECTION", "true")
    monkeypatch.setenv("CLOUDTRIGGERS_ALLOWED_ENDPOINTS", "http://10.0.0.0/8, https://*.corp")
    monkeypatch.setenv("CLOUDTRIGGERS_FAULT_ROUNDS", "3")  # a test harness's, not a setting
    s = Settings(workers=6)
    assert s.transient_backoff == (0.2, 2.0) and s.workers == 6 and s.leader_election is True
    assert s.allowed_endpoints == ["http://10.0.0.0/8", "https://*.corp"]
    assert Settings().workers == 5
    with pytest.raises(ValueError):
        s.workers = 0
    monkeypatch.setenv("CLOUDTRIGGERS_SLOW_BACKOFF", "12, 1800")
    with pytest.raises(ValueError, match="CLOUDTRIGGERS_SLOW_BACKOFF: not JSON"):
        Settings()
    monkeypatch.setenv("CLOUDTRIGGERS_SLOW_BACKOFF", "[12, 1800]")
    monkeypatch.setenv("CLOUDTRIGGERS_DENIED_ENDPOINTS", "no-scheme.example")
    with pytest.raises(ValueError, match="give a scheme"):
        Settings()
    with pytest.raises(ValueError):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_rate_and_burst_are_unset_caps_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtriggers.providers import build_providers

    for name in ("CLOUDTRIGGERS_RATE", "CLOUDTRIGGERS_BURST"):
        monkeypatch.delenv(name, raising=False)
    s = run_settings(build_parser().parse_args(["run"]))
    assert (s.rate, s.burst, s.provider_concurrency) == (None, None, 8)
    limiter = build_providers(s.rate, s.burst)["gitlab"].limiter  # type: ignore[attr-defined]
    assert (limiter.rate, limiter.burst, limiter.concurrency) == (None, None, 8)
    monkeypatch.setenv("CLOUDTRIGGERS_BURST", "4")
    s = run_settings(build_parser().parse_args(["run", "--rate", "2.5"]))
    assert (s.rate, s.burst) == (2.5, 4)  # explicit values still work, now as caps
    limiter = build_providers(s.rate, s.burst)["swr"].limiter  # type: ignore[attr-defined]
    assert (limiter.rate, limiter.burst) == (2.5, 4)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Settings(default_credentials_secret="no-namespace")
    with pytest.raises(ValueError):
        Settings(rate=0)
    with pytest.raises(ValueError):
        Settings(burst=0)


@pytest.mark.parametrize(
    "command", ["run", "validate", "plan", "crd", "demo", "sandbox", "version", "release-credentials"]
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: cloudtriggers " + command)


def test_ack_settings_reach_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtriggers.models import AckSpec
    from cloudtriggers.providers import build_providers

    monkeypatch.setenv("CLOUDTRIGGERS_ACK_NETWORK", "vpc")
    args = build_parser().parse_args(["run", "--ack-trusted-endpoint", "https://cs.internal.example.com"])
    s = run_settings(args)
    assert s.ack_network == "vpc" and s.ack_trusted_endpoints == ["https://cs.internal.example.com"]
    ack = build_providers(s.rate, s.burst, s.ack_network, s.ack_trusted_endpoints)["ack"]
    block = AckSpec(regionId="cn-beijing", clusterId="c1", projectId="default/web")
    assert ack.endpoint(block) == "https://cs-vpc.cn-beijing.aliyuncs.com"  # type: ignore[attr-defined]
    assert "https://cs.internal.example.com" in ack.trusted_endpoints  # type: ignore[attr-defined]


def test_no_kopf_change_handler_so_no_diff_base_is_needed() -> None:
    """handlers.NoDiffBase skips kopf's per-event essence: right only while kopf has no change
    handler for Triggers (on.create/update/resume/delete would silently never see a diff)."""
    from kubernetes import client as k8s

    from cloudtriggers.handlers import NoDiffBase
    from cloudtriggers.models import GROUP, PLURAL, VERSION
    from cloudtriggers.runner import build_operator

    parts = build_operator(Settings(), k8s.ApiClient(k8s.Configuration()), serve_http=False)
    assert isinstance(parts.settings.persistence.diffbase_storage, NoDiffBase)
    resource = kopf.Resource(GROUP, VERSION, PLURAL)
    assert not parts.registry._changing.has_handlers(resource=resource)
    assert parts.registry._watching.has_handlers(resource=resource)
