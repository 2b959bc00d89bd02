"""packed.py: the scheduler's copy of each Trigger. Whatever goes in comes out (less what kept()
leaves out), and packing does not touch the caller's body. How small a Trigger as the operator
leaves it packs is checked per provider in tests/integration/test_packed_bodies.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cloudtriggers.packed import DICTIONARY, kept, pack, unpack

BODIES: list[dict[str, Any]] = [
    {},
    {"metadata": {}},
    {"apiVersion": "cloudtriggers.io/v1alpha1", "kind": "Trigger", "metadata": {"name": "web", "uid": "u"}},
    {
        "metadata": {"name": "ünïcödé-✓", "annotations": {"note": '日本語 \u0000 \\ " \n'}},
        "spec": {"gitlab": {"url": "https://gitlab.example.com", "project": "group/web"}},
        "status": {"conditions": [{"type": "Ready", "status": "False", "message": "x" * 5000}]},
    },
    {
        "metadata": {"name": "big"},
        "spec": {"list": list(range(2000)), "nested": {"a": {"b": {"c": [None, True, 1.5]}}}},
    },
]


@pytest.mark.parametrize("body", BODIES)
def test_what_goes_in_comes_out(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    got = unpack(pack(body))
    assert got == kept(body) == body  # none of these has anything kept() leaves out
    assert body == before


def test_each_unpack_is_a_copy_of_its_own() -> None:
    data = pack(BODIES[3])
    one = unpack(data)
    one["metadata"]["name"] = "changed"
    assert unpack(data)["metadata"]["name"] == "ünïcödé-✓"


def test_managed_fields_and_the_last_applied_copy_are_not_kept() -> None:
    body = {
        "metadata": {
            "name": "web",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "1"},
        }
    }
    assert unpack(pack(body)) == {"metadata": {"name": "web", "annotations": {"keep": "1"}}}


def test_the_dictionary_is_valid_json_of_typical_triggers() -> None:
    """Built from the code's own names: a rename in models.py moves it along."""
    text = DICTIONARY.decode()
    parts = text.replace("}{", "}\n{").splitlines()
    assert [json.loads(p)["status"]["provider"] for p in parts] == ["swr", "ack", "gitlab"]
