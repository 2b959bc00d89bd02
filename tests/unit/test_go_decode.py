"""Times and bytes as a real API server decodes them, and the writes that depend on it.

apiserver/gotime.py follows Go's time.Parse (src/time/format.go) for the two layouts of metav1.Time
(RFC3339) and metav1.MicroTime (RFC3339Micro); apiserver/typed.py's base64_error follows
encoding/base64's StdEncoding.Decode, which encoding/json runs on a []byte such as a Secret's data.
The error cases below are Go's own (src/time/format_test.go parseErrorTests and TestQuote,
src/encoding/base64/base64_test.go TestDecodeCorrupt). A built-in object that does not decode is a
400 (apiserver endpoints/handlers/rest.go transformDecodeError); a Lease's spec is checked as
pkg/apis/coordination/validation ValidateLeaseSpec does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cloudtriggers.apiserver.gotime import RFC3339, RFC3339_MICRO, parse, quote
from cloudtriggers.apiserver.typed import base64_error
from cloudtriggers.sandbox.kube import KubeServer

LAYOUT = '"2006-01-02T15:04:05Z07:00"'  # as Go quotes RFC3339 in an error


@pytest.mark.parametrize(
    ("value", "error"),
    [
        # format_test.go parseErrorTests, the RFC3339 rows.
        ("2006-01-02T15:04:05Z07:00", 'parsing time "2006-01-02T15:04:05Z07:00": extra text: "07:00"'),
        (
            "2006-01-02T15:04_abc",
            f'parsing time "2006-01-02T15:04_abc" as {LAYOUT}: cannot parse "_abc" as ":"',
        ),
        (
            "2006-01-02T15:04:05_abc",
            f'parsing time "2006-01-02T15:04:05_abc" as {LAYOUT}: cannot parse "_abc" as "Z07:00"',
        ),
        ("2006-01-02T15:04:05Z_abc", 'parsing time "2006-01-02T15:04:05Z_abc": extra text: "_abc"'),
        (
            "2010-02-04T21:00:67.012345678-08:00",
            'parsing time "2010-02-04T21:00:67.012345678-08:00": second out of range',
        ),
        ('"', f'parsing time "\\"" as {LAYOUT}: cannot parse "\\"" as "2006"'),
        # The checks after and inside the loop: the day of the month, the month, the zone's hour.
        ("2026-02-29T00:00:00Z", 'parsing time "2026-02-29T00:00:00Z": day out of range'),
        ("2026-13-01T00:00:00Z", 'parsing time "2026-13-01T00:00:00Z": month out of range'),
        ("2026-12-06T24:00:00Z", 'parsing time "2026-12-06T24:00:00Z": hour out of range'),
        (
            "2026-12-06T23:00:00+25:00",
            'parsing time "2026-12-06T23:00:00+25:00": time zone offset hour out of range',
        ),
    ],
)
def test_rfc3339_refuses_as_go_does(value: str, error: str) -> None:
    assert parse(RFC3339, value) == error


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-06T23:10:00Z",
        "2026-12-06T23:10:00+00:00",  # Python's isoformat() of a UTC time at a whole second
        "2026-12-06T23:10:00.5-08:00",
        "2021-09-29T16:04:33.9999999999999999Z",  # format_test.go: more than nine digits truncate
        "2024-02-29T00:00:00Z",
        "2026-12-06T3:10:00Z",  # the hour ("15") takes one digit or two
    ],
)
def test_rfc3339_takes_what_go_takes(value: str) -> None:
    assert parse(RFC3339, value) is None


def test_a_micro_time_needs_exactly_six_digits_of_fraction() -> None:
    layout = '"2006-01-02T15:04:05.000000Z07:00"'
    assert parse(RFC3339_MICRO, "2026-12-06T23:10:00.000000Z") is None
    assert parse(RFC3339_MICRO, "2026-12-06T23:10:00.123456+00:00") is None
    assert parse(RFC3339_MICRO, "2026-12-06T23:10:00+00:00") == (
        f'parsing time "2026-12-06T23:10:00+00:00" as {layout}: cannot parse "+00:00" as ".000000"'
    )
    assert parse(RFC3339_MICRO, "2026-12-06T23:10:00Z") == (
        f'parsing time "2026-12-06T23:10:00Z" as {layout}: cannot parse "Z" as ".000000"'
    )
    assert parse(RFC3339_MICRO, "2026-12-06T23:10:00.123Z") == (
        f'parsing time "2026-12-06T23:10:00.123Z" as {layout}: cannot parse ".123Z" as ".000000"'
    )
    assert parse(RFC3339_MICRO, "2026-12-06T23:10:00.1234567Z") == (
        f'parsing time "2026-12-06T23:10:00.1234567Z" as {layout}: cannot parse "7Z" as "Z07:00"'
    )
    # parseNanoseconds' atoi takes a sign; a negative fraction is then out of range.
    assert parse(RFC3339_MICRO, "2026-12-06T23:10:00.-12345Z") == (
        'parsing time "2026-12-06T23:10:00.-12345Z": fractional second out of range'
    )


def test_quote_is_gos() -> None:
    # format_test.go TestQuote.
    assert quote('"') == '"\\""'
    assert quote('abc"xyz"') == '"abc\\"xyz\\""'
    assert quote("") == '""'
    assert quote("☺ hello ☺ hello") == '"\\xe2\\x98\\xba hello \\xe2\\x98\\xba hello"'
    assert quote("\x04") == '"\\x04"'


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        # base64_test.go TestDecodeCorrupt, every row (None: no corruption).
        ("", None),
        ("\n", None),
        ("AAA=\n", None),
        ("AAAA\n", None),
        ("!!!!", 0),
        ("====", 0),
        ("x===", 1),
        ("=AAA", 0),
        ("A=AA", 1),
        ("AA=A", 2),
        ("AA==A", 4),
        ("AAA=AAAA", 4),
        ("AAAAA", 4),
        ("AAAAAA", 4),
        ("A=", 1),
        ("A==", 1),
        ("AA=", 3),
        ("AA==", None),
        ("AAA=", None),
        ("AAAA", None),
        ("AAAAAA=", 7),
        ("YWJjZA=====", 8),
        ("A!\n", 1),
        ("A=\n", 1),
    ],
)
def test_base64_corruption_is_found_where_go_finds_it(text: str, offset: int | None) -> None:
    assert base64_error(text.encode()) == offset


# -- the emulated API ---------------------------------------------------------------------------------


@pytest.fixture()
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server


def lease(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": spec}


def test_a_lease_whose_micro_time_does_not_decode_is_a_400(kube: KubeServer) -> None:
    url = f"{kube.url}/apis/coordination.k8s.io/v1/namespaces/default/leases"
    rsp = requests.post(url, json=lease(holderIdentity="a", renewTime="2026-12-06T23:10:00+00:00"), timeout=5)
    assert rsp.status_code == 400 and rsp.json()["reason"] == "BadRequest"
    assert rsp.json()["message"] == (
        'Lease in version "v1" cannot be handled as a Lease: parsing time "2026-12-06T23:10:00+00:00" as '
        '"2006-01-02T15:04:05.000000Z07:00": cannot parse "+00:00" as ".000000"'
    )
    # The first field that fails, in the body's order, is the one named.
    both = lease(acquireTime="2026-12-06T23:10:00Z", renewTime="x")
    assert 'cannot parse "Z" as ".000000"' in requests.post(url, json=both, timeout=5).json()["message"]
    rsp = requests.post(url, json=lease(renewTime=5), timeout=5)
    assert rsp.status_code == 400 and rsp.json()["message"].endswith(
        "json: cannot unmarshal number into Go struct field LeaseSpec.spec.renewTime of type string"
    )
    good = lease(holderIdentity="a", renewTime="2026-12-06T23:10:00.000000Z", acquireTime=None)
    created = requests.post(url, json=good, timeout=5)
    assert created.status_code == 201
    # A replace decodes its body too, before the object is looked up.
    replaced = {**created.json(), "spec": {"renewTime": "2026-12-06T23:10:01Z"}}
    rsp = requests.put(f"{url}/l", json=replaced, timeout=5)
    assert rsp.status_code == 400 and 'cannot parse "Z" as ".000000"' in rsp.json()["message"]
    rsp = requests.put(f"{url}/absent", json={**replaced, "metadata": {"name": "absent"}}, timeout=5)
    assert rsp.status_code == 400


def test_a_lease_spec_is_validated_as_validate_lease_spec_does(kube: KubeServer) -> None:
    url = f"{kube.url}/apis/coordination.k8s.io/v1/namespaces/default/leases"
    rsp = requests.post(url, json=lease(leaseDurationSeconds=0, leaseTransitions=-1), timeout=5)
    assert rsp.status_code == 422
    message = rsp.json()["message"]
    assert 'Lease.coordination.k8s.io "l" is invalid: [' in message
    assert "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0" in message
    assert "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0" in message
    rsp = requests.post(url, json=lease(preferredHolder="b"), timeout=5)
    assert rsp.status_code == 422 and (
        "spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined"
        in rsp.json()["message"]
    )
    rsp = requests.post(url, json=lease(strategy="Newest"), timeout=5)
    assert (
        'spec.strategy.strategy: Unsupported value: "Newest": supported values: "OldestEmulationVersion"'
        in (rsp.json()["message"])
    )
    assert requests.post(url, json=lease(strategy="OldestEmulationVersion"), timeout=5).status_code == 201


def test_an_event_whose_timestamp_does_not_decode_is_a_400(kube: KubeServer) -> None:
    url = f"{kube.url}/api/v1/namespaces/default/events"
    event = {
        "metadata": {"generateName": "web."},
        "involvedObject": {"kind": "Trigger", "name": "web", "namespace": "default"},
        "reason": "Created",
        "firstTimestamp": "2026-12-06T23:10:00+00:00",  # a Time: RFC3339 takes it
    }
    assert requests.post(url, json=event, timeout=5).status_code == 201
    rsp = requests.post(url, json={**event, "lastTimestamp": "yesterday"}, timeout=5)
    assert rsp.status_code == 400
    assert rsp.json()["message"].startswith(
        'Event in version "v1" cannot be handled as a Event: parsing time "yesterday" as '
    )
    micro = {**event, "eventTime": "2026-12-06T23:10:00Z", "reportingComponent": "c", "action": "A"}
    assert 'cannot parse "Z" as ".000000"' in requests.post(url, json=micro, timeout=5).json()["message"]


def test_a_secret_whose_data_is_not_base64_is_a_400(kube: KubeServer) -> None:
    url = f"{kube.url}/api/v1/namespaces/default/secrets"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    rsp = requests.post(
        url, json={**secret, "data": {"ok": "dG9rZW4=", "token": "plain-token"}}, timeout=5
    )  # "-" at 5
    assert rsp.status_code == 400
    assert rsp.json()["message"] == (
        'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 5'
    )
    # A time that fails ends the decode and wins over a saved base64 error, wherever it stands.
    timed = {**secret, "data": {"token": "!"}, "metadata": {"name": "s", "creationTimestamp": "now"}}
    message = requests.post(url, json=timed, timeout=5).json()["message"]
    assert 'parsing time "now"' in message and "base64" not in message
    rsp = requests.post(url, json={**secret, "data": {"n": 5}}, timeout=5)
    assert rsp.json()["message"].endswith(
        "json: cannot unmarshal number into Go struct field Secret.data of type []uint8"
    )
    # stringData is text: anything goes, and it is folded into data.
    assert requests.post(url, json={**secret, "stringData": {"token": "plain"}}, timeout=5).status_code == 201
