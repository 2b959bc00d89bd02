"""The pydantic models: validation the operator applies when the CRD could not (InvalidSpec)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from cloudtriggers.models import (
    SWR_NAME_PATTERN,
    TriggerSpec,
    default_description,
    default_secret_name,
    parse_duration,
    swr_default_name,
    token_sha256,
)

SWR = {
    "region": "cn-north-4",
    "organization": "group",
    "repository": "web",
    "application": "web",
    "clusterNamespace": "default",
    "clusterName": "prod",
}


def test_defaults() -> None:
    spec = TriggerSpec.model_validate({"gitlab": {"project": "group/web"}})
    assert spec.provider == "gitlab"
    assert spec.gitlab is not None and spec.gitlab.url == "https://gitlab.com"
    assert spec.deletion_policy == "Delete" and spec.management_policy == "Full"
    assert default_description("apps", "web") == "apps/web"
    assert default_secret_name("web") == "web-trigger"
    swr = TriggerSpec.model_validate({"swr": SWR}).swr
    assert swr is not None
    assert (swr.trigger_type, swr.condition, swr.enabled, swr.trigger_mode) == ("all", ".*", True, "cce")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("5s", 5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1d", "m", "1m1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_resync_period_minimum() -> None:
    with pytest.raises(ValidationError, match="at least 5s"):
        TriggerSpec.model_validate({"gitlab": {"project": "g/w"}, "resyncPeriod": "4s"})


def test_exactly_one_block_and_observe_only() -> None:
    with pytest.raises(ValidationError, match="exactly one provider block"):
        TriggerSpec.model_validate({})
    with pytest.raises(ValidationError, match=r"ObserveOnly needs spec\.externalId"):
        TriggerSpec.model_validate({"gitlab": {"project": "g/w"}, "managementPolicy": "ObserveOnly"})
    TriggerSpec.model_validate({"swr": SWR, "managementPolicy": "ObserveOnly"})


def test_swr_cross_field_rules() -> None:
    no_cluster = {k: v for k, v in SWR.items() if k != "clusterName"}
    with pytest.raises(ValidationError, match="clusterId or clusterName"):
        TriggerSpec.model_validate({"swr": no_cluster})
    TriggerSpec.model_validate({"swr": {**no_cluster, "triggerMode": "cci"}})
    with pytest.raises(ValidationError, match="condition"):
        TriggerSpec.model_validate({"swr": {**SWR, "condition": "v1"}})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web", "web"),
        ("web-all", "web-all"),
        ("Web_1", "Web_1"),
        ("web.api", None),
        ("1-web", None),
        ("web--api", None),
        ("x" * 64, "x" * 64),
        ("x" * 70, None),
        ("123", None),
    ],
)
def test_swr_default_name(name: str, expected: str | None) -> None:
    got = swr_default_name("apps", name)
    assert re.fullmatch(SWR_NAME_PATTERN, got) and len(got) <= 64
    if expected is not None:
        assert got == expected
    else:
        # Derived: sanitized, cut to 55, plus '-' and 8 hex of sha256("<namespace>/<name>").
        assert re.fullmatch(r".{1,55}-[0-9a-f]{8}", got), got
        assert got != swr_default_name("other", name)  # the namespace keeps names apart


def test_swr_default_name_examples() -> None:
    assert swr_default_name("apps", "web.api").startswith("web-api-")
    assert swr_default_name("apps", "1-web").startswith("web-")
    assert swr_default_name("apps", "web--api").startswith("web-api-")


def test_token_hash_is_a_12_hex_prefix() -> None:
    h = token_sha256("glptt-" + "0" * 40)
    assert re.fullmatch(r"[0-9a-f]{12}", h)
