"""A Trigger as the operator leaves it, one per provider, still packs small against packed.py's
dictionary: the scheduler keeps one per Trigger, and a change of what the reconciler writes (a new
status field, a renamed reason) that the dictionary no longer matches shows here, not as memory."""

from __future__ import annotations

import json
from typing import Any

import pytest

import integration.test_ack_operator as ack
import integration.test_gitlab_operator as gitlab
import integration.test_swr_operator as swr
from cloudtriggers.packed import kept, pack, unpack
from cloudtriggers.settings import Settings


def _check(body: dict[str, Any]) -> None:
    text = json.dumps(kept(body), separators=(",", ":")).encode()
    packed = pack(body)
    assert unpack(packed) == kept(body)
    assert len(packed) < len(text) / 4, (body["status"]["provider"], len(packed), len(text))


def test_a_gitlab_trigger_packs_to_under_a_quarter() -> None:
    w = gitlab.World(Settings(credentials_poll=0.5))
    w.start()
    try:
        gitlab.setup_world(w)
        w.create_trigger(w.trigger_obj("web"))
        _check(w.ready("web"))
    finally:
        w.stop()


def test_an_ack_trigger_packs_to_under_a_quarter(caplog: pytest.LogCaptureFixture) -> None:
    with ack.ack_world(ack.World, caplog) as w:
        w.create_trigger(w.trigger_obj("web"))
        _check(w.ready("web"))


def test_an_swr_trigger_packs_to_under_a_quarter(caplog: pytest.LogCaptureFixture) -> None:
    with swr.swr_world(swr.World, caplog) as w:
        w.create_trigger(w.trigger_obj("web"))
        _check(w.ready("web"))
