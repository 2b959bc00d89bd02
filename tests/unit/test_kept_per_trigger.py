"""What the operator keeps per Trigger between passes: one copy of each identity string, no lock, no
secret in the log filter's registry, and indexes that shrink back when Triggers go."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from cloudtriggers import logs
from cloudtriggers.credentials import CredentialsGuard
from cloudtriggers.ids import intern_ids
from cloudtriggers.reconcile import Reconciler
from cloudtriggers.reconcile.claims import Claim, ClaimIndex, winner
from cloudtriggers.scheduler import _Entry


def _decoded(uid: str = "0b5e-uid-of-one-trigger", version: str = "1") -> dict[str, Any]:
    """A Trigger as each watch event brings it: decoded anew, so its strings are fresh copies."""
    text = json.dumps(
        {
            "metadata": {
                "uid": uid,
                "name": "web",
                "namespace": "apps",
                "resourceVersion": version,
                "creationTimestamp": "2026-12-06T10:00:00Z",
            },
            "spec": {"credentialsSecretRef": {"name": "gitlab-creds"}, "gitlab": {}},
        }
    )
    return json.loads(text)  # type: ignore[no-any-return]


def test_two_events_of_one_trigger_share_one_copy_of_its_identity() -> None:
    a, b = _decoded(version="1"), _decoded(version="2")
    assert a["metadata"]["uid"] is not b["metadata"]["uid"]  # what json gives: a copy each
    intern_ids(a), intern_ids(b)
    for key in ("uid", "name", "namespace"):
        assert a["metadata"][key] is b["metadata"][key]
    assert intern_ids(None) is None and intern_ids({"metadata": {"uid": 7}}) == {"metadata": {"uid": 7}}


def test_a_scheduler_entry_hands_out_bodies_with_its_own_identity_strings() -> None:
    body = intern_ids(_decoded())
    meta = body["metadata"]
    e = _Entry(meta["uid"], meta["namespace"], meta["name"])
    e.keep(body)
    got = e.body
    assert got["metadata"]["uid"] is e.uid and got["metadata"]["name"] is e.name
    assert got == body and got is not body  # still the caller's own copy


def test_the_credentials_guard_keeps_each_secret_key_once_and_forgets_it_with_its_last_user() -> None:
    guard = CredentialsGuard(kube=None)  # type: ignore[arg-type]  # only the watch's bookkeeping
    bodies = [_decoded(uid=f"uid-{i}") for i in range(3)]
    for body in bodies:
        guard.note(body["metadata"]["uid"], body)
    keys = [guard._uses[f"uid-{i}"] for i in range(3)]
    assert keys[0] == ("apps", "gitlab-creds") and keys[0] is keys[1] is keys[2]
    assert guard.users(("apps", "gitlab-creds")) == 3
    for i in range(3):
        assert guard.drop(f"uid-{i}") == ("apps", "gitlab-creds")
    assert guard.users(("apps", "gitlab-creds")) == 0
    assert guard._users == {} and guard._keys == {}


def test_claims_of_one_object_keep_the_winner_rule_and_leave_nothing_behind() -> None:
    index = ClaimIndex()
    old = Claim.of(
        {"uid": "u1", "namespace": "apps", "name": "b", "creationTimestamp": "2026-01-01T00:00:00Z"}, False
    )
    new = Claim.of(
        {"uid": "u2", "namespace": "apps", "name": "a", "creationTimestamp": "2026-02-01T00:00:00Z"}, False
    )
    index.put("gitlab|h|1|9", old)
    index.put("gitlab|h|1|9", new)
    assert index.others("gitlab|h|1|9", "u2") == [old] and old.ref == "apps/b"
    assert winner(new, index.others("gitlab|h|1|9", "u2")) is old  # the oldest keeps it
    index.put("gitlab|h|1|9", Claim.of({"uid": "u2", "namespace": "apps", "name": "a"}, True))
    assert winner(old, index.others("gitlab|h|1|9", "u1")).uid == "u2"  # then the owner
    index.put("gitlab|h|1|10", new)  # u2 moves to another object
    assert index.others("gitlab|h|1|9", "u1") == [] and index.others("gitlab|h|1|10", "u1") == [new]
    index.drop("u1")
    index.drop("u2")
    assert index._by_key == {} and index._by_uid == {}


def test_a_trigger_lock_is_exclusive_and_lives_only_while_a_pass_wants_it() -> None:
    r = Reconciler(kube=None, providers={})  # type: ignore[arg-type]
    inside, overlap = [], []
    started = threading.Event()

    def a_pass(n: int) -> None:
        with r.lock("u1"):
            started.set()
            inside.append(n)
            if len(inside) > 1:
                overlap.append(n)
            time.sleep(0.05)
            inside.remove(n)

    first = threading.Thread(target=a_pass, args=(1,))
    first.start()
    started.wait(5)
    r.forget("u1")  # the Trigger's DELETED event while its last pass runs
    second = threading.Thread(target=a_pass, args=(2,))
    second.start()
    first.join(5)
    second.join(5)
    assert overlap == []  # forget() did not let a second pass in beside the first
    assert r._locks == {}


def test_the_log_filter_keeps_no_copy_of_a_registered_secret() -> None:
    secret = "glptt-" + "7" * 34 + "kept-nowhere"
    logs.register_secret(secret)
    assert all(not isinstance(v, str) for bucket in logs._by_length.values() for v in bucket)
    assert logs.scrub(f"token={secret}&x") == "token=***&x"


def test_an_output_secret_is_kept_as_digests_that_answer_what_a_drift_check_asks() -> None:
    from cloudtriggers.models import token_sha256
    from cloudtriggers.output_secrets import OutputSecret

    token = "eyJhbGciOi." + "x" * 250  # ACK's tokens are this long, and its url repeats it
    outputs = {"token": token, "url": "https://cs.example.com/hook/trigger?token=" + token}
    held = OutputSecret.of({**outputs, "note": "a key someone added"}, "42")
    assert held.token_sha == token_sha256(token) and held.version == "42"
    assert held.holds(outputs) and held.holds({})  # the Secret's own extra keys do not matter
    assert not held.holds({**outputs, "token": token + "y"})  # a changed value
    assert not held.holds({**outputs, "other": "v"})  # a missing key
    assert not held.holds({"token": outputs["url"]})  # a value under another key
    assert token not in repr(held) and len(held.digests) == 3 * 16
    assert OutputSecret.of({"url": "u"}, "1").token_sha is None


def test_a_trigger_without_request_annotations_is_fingerprinted_by_its_generation_alone() -> None:
    from cloudtriggers.handlers import fingerprint
    from cloudtriggers.reconcile.passes import REQUESTED_ANNOTATION

    plain, again = _decoded(), _decoded()
    plain["metadata"]["generation"] = again["metadata"]["generation"] = 3
    assert fingerprint(plain) == fingerprint(again) == 3  # an int, shared: no tuple per Trigger
    asked = _decoded()
    asked["metadata"].update(generation=3, annotations={REQUESTED_ANNOTATION: "2026-12-06T10:00:00Z"})
    assert fingerprint(asked) == (3, None, "2026-12-06T10:00:00Z", None) != fingerprint(plain)
    again["metadata"]["generation"] = 4
    assert fingerprint(again) != fingerprint(plain)


def test_the_scheduler_keeps_one_copy_of_the_version_our_own_write_got_back() -> None:
    import asyncio
    from types import SimpleNamespace

    from cloudtriggers.scheduler import Scheduler

    async def scenario() -> None:
        reconciler = SimpleNamespace(versions={})
        sched = Scheduler(reconciler, call=None, workers=1, credentials_poll=15.0)  # type: ignore[arg-type]
        first = intern_ids(_decoded(version="1007"))
        sched.observe(first, lambda: 60.0)
        uid = first["metadata"]["uid"]
        reconciler.versions[uid] = str(1008)  # our status write's answer, a string of its own
        sched.observe(intern_ids(_decoded(version="1008")), lambda: 60.0)
        assert sched.entries[uid].version is reconciler.versions[uid]
        sched.observe(intern_ids(_decoded(version="1009")), lambda: 60.0)  # someone else's write
        assert sched.entries[uid].version == "1009"

    asyncio.run(scenario())
