"""The GitLab sandbox answers like the GitLab REST v4 API described in providers-gitlab.md."""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import gitlab
import pytest
import requests

from cloudtriggers.sandbox.gitlab import (
    DEVELOPER,
    MAINTAINER,
    UPDATE_FORBIDDEN,
    Faults,
    GitLabSandbox,
    SandboxUser,
)

TOKEN_RE = re.compile(r"glptt-[0-9a-f]{40}")
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@dataclass
class World:
    sb: GitLabSandbox
    pid: int
    alice: SandboxUser  # Maintainer, creates most triggers
    bob: SandboxUser  # Maintainer
    dave: SandboxUser  # Developer
    eve: SandboxUser  # not a member
    root: SandboxUser  # instance admin, not a member

    def api(self, path: str) -> str:
        return f"{self.sb.url}/api/v4{path}"

    def triggers_url(self, suffix: str = "") -> str:
        return self.api(f"/projects/{self.pid}/triggers{suffix}")


def auth(user: SandboxUser) -> dict[str, str]:
    return {"PRIVATE-TOKEN": user.token}


@pytest.fixture
def world() -> Iterator[World]:
    with GitLabSandbox() as sb:
        users = {name: sb.add_user(name) for name in ("alice", "bob", "dave", "eve")}
        root = sb.add_user("root", admin=True)
        pid = sb.add_project("group/web", {"alice": MAINTAINER, "bob": MAINTAINER, "dave": DEVELOPER})
        yield World(sb, pid, users["alice"], users["bob"], users["dave"], users["eve"], root)


def create(w: World, user: SandboxUser, description: str = "t") -> dict[str, Any]:
    r = requests.post(w.triggers_url(), headers=auth(user), json={"description": description}, timeout=5)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


# ---- python-gitlab


def test_crud_through_python_gitlab(world: World) -> None:
    gl = gitlab.Gitlab(world.sb.url, private_token=world.alice.token)
    gl.auth()
    assert gl.user is not None and gl.user.username == "alice"
    triggers = gl.projects.get(world.pid, lazy=True).triggers

    created = triggers.create({"description": "deploy web"})
    assert TOKEN_RE.fullmatch(created.token)
    assert created.owner["username"] == "alice"
    assert created.last_used is None and created.expires_at is None
    assert ISO_MS_Z.fullmatch(created.created_at)

    fetched = triggers.get(created.id)
    assert fetched.token == created.token
    fetched.description = "deploy web v2"
    fetched.save()
    assert triggers.get(created.id).description == "deploy web v2"
    assert [t.id for t in triggers.list(get_all=True)] == [created.id]

    fetched.delete()
    with pytest.raises(gitlab.GitlabGetError) as err:
        triggers.get(created.id)
    assert err.value.response_code == 404
    assert world.sb.triggers(world.pid) == []


def test_bearer_token_through_python_gitlab(world: World) -> None:
    gl = gitlab.Gitlab(world.sb.url, oauth_token=world.bob.token)
    created = gl.projects.get(world.pid, lazy=True).triggers.create({"description": "b"})
    assert created.owner["username"] == "bob"
    assert world.sb.calls("POST")[-1].user == "bob"


def test_list_get_all_follows_pagination_past_100(world: World) -> None:
    made = [world.sb.create_trigger_as("alice", world.pid, f"t{i}")["id"] for i in range(130)]
    gl = gitlab.Gitlab(world.sb.url, private_token=world.alice.token)
    triggers = gl.projects.get(world.pid, lazy=True).triggers
    assert [t.id for t in triggers.list(get_all=True, per_page=100)] == made
    assert len(world.sb.calls("GET", "/triggers")) == 2
    assert len(triggers.list(get_all=True)) == 130  # default per_page 20: seven pages


def test_project_by_encoded_path(world: World) -> None:
    gl = gitlab.Gitlab(world.sb.url, private_token=world.dave.token)
    project = gl.projects.get("group/web")
    assert project.id == world.pid and project.path_with_namespace == "group/web"
    assert project.permissions["project_access"]["access_level"] == DEVELOPER
    assert world.sb.calls()[-1].path == "/api/v4/projects/group%2Fweb"

    r = requests.get(world.api("/projects/group%2Fweb/triggers"), headers=auth(world.alice), timeout=5)
    assert r.status_code == 200
    r = requests.get(world.api("/projects/group/web/triggers"), headers=auth(world.alice), timeout=5)
    assert (r.status_code, r.json()) == (404, {"error": "404 Not Found"})


def test_python_gitlab_obeys_429_retry_after(world: World) -> None:
    world.sb.faults.retry_after = 0
    world.sb.fail_next(1, 429)
    gl = gitlab.Gitlab(world.sb.url, private_token=world.alice.token)
    gl.projects.get(world.pid, lazy=True).triggers.create({"description": "x"})
    assert [c.status for c in world.sb.calls("POST")] == [429, 201]


# ---- exact statuses and bodies


def test_missing_or_bad_credentials_are_401(world: World) -> None:
    for headers in ({}, {"PRIVATE-TOKEN": "glpat-nope"}, {"Authorization": "Bearer glpat-nope"}):
        r = requests.get(world.triggers_url(), headers=headers, timeout=5)
        assert (r.status_code, r.json()) == (401, {"message": "401 Unauthorized"})
    r = requests.get(world.api("/user"), headers={"Authorization": f"Bearer {world.alice.token}"}, timeout=5)
    assert r.status_code == 200 and r.json()["username"] == "alice" and r.json()["state"] == "active"


def test_developer_is_403_and_non_member_is_404(world: World) -> None:
    trig = create(world, world.alice)
    for method, suffix in (
        ("GET", ""),
        ("POST", ""),
        ("GET", f"/{trig['id']}"),
        ("DELETE", f"/{trig['id']}"),
    ):
        r = requests.request(
            method, world.triggers_url(suffix), headers=auth(world.dave), json={"description": "d"}, timeout=5
        )
        assert (r.status_code, r.json()) == (403, {"message": "403 Forbidden"}), (method, suffix)
    for url in (
        world.triggers_url(),
        world.api(f"/projects/{world.pid}"),
        world.api("/projects/group%2Fnope"),
    ):
        r = requests.get(url, headers=auth(world.eve), timeout=5)
        assert (r.status_code, r.json()) == (404, {"message": "404 Project Not Found"})


def test_unknown_trigger_is_404(world: World) -> None:
    for method in ("GET", "PUT", "DELETE"):
        r = requests.request(method, world.triggers_url("/999"), headers=auth(world.alice), timeout=5)
        assert (r.status_code, r.json()) == (404, {"message": "404 Trigger Not Found"})


def test_update_needs_the_owner_or_an_admin(world: World) -> None:
    trig = create(world, world.alice, "mine")
    url = world.triggers_url(f"/{trig['id']}")
    r = requests.put(url, headers=auth(world.bob), json={"description": "hijack"}, timeout=5)
    assert (r.status_code, r.json()) == (403, {"message": UPDATE_FORBIDDEN})
    r = requests.put(url, headers=auth(world.root), data={"description": "by admin"}, timeout=5)
    assert r.status_code == 200 and r.json()["description"] == "by admin"
    assert world.sb.triggers(world.pid)[0]["description"] == "by admin"


def test_other_users_tokens_are_masked_to_four_hex_chars(world: World) -> None:
    trig = create(world, world.alice)
    create(world, world.alice)
    full, url = trig["token"], world.triggers_url(f"/{trig['id']}")
    assert requests.get(url, headers=auth(world.bob), timeout=5).json()["token"] == full[6:10]
    assert requests.get(url, headers=auth(world.alice), timeout=5).json()["token"] == full
    assert requests.get(url, headers=auth(world.root), timeout=5).json()["token"] == full
    listed = requests.get(world.triggers_url(), headers=auth(world.bob), timeout=5).json()
    assert [len(t["token"]) for t in listed] == [4, 4]


def test_pagination_headers(world: World) -> None:
    for i in range(5):
        world.sb.create_trigger_as("alice", world.pid, f"t{i}")
    r = requests.get(
        world.triggers_url(), headers=auth(world.alice), params={"page": 2, "per_page": 2}, timeout=5
    )
    assert len(r.json()) == 2
    h = r.headers
    assert (h["x-page"], h["x-per-page"], h["x-next-page"], h["x-prev-page"]) == ("2", "2", "3", "1")
    assert (h["x-total"], h["x-total-pages"]) == ("5", "3")
    assert {rel: link["url"].split("?")[1] for rel, link in r.links.items()} == {
        "prev": "page=1&per_page=2",
        "next": "page=3&per_page=2",
        "first": "page=1&per_page=2",
        "last": "page=3&per_page=2",
    }
    r = requests.get(
        world.triggers_url(), headers=auth(world.alice), params={"page": 3, "per_page": 2}, timeout=5
    )
    assert r.headers["x-next-page"] == "" and "next" not in r.links and len(r.json()) == 1
    r = requests.get(world.triggers_url(), headers=auth(world.alice), params={"per_page": 500}, timeout=5)
    assert r.headers["x-per-page"] == "100"


def test_create_requires_description(world: World) -> None:
    r = requests.post(world.triggers_url(), headers=auth(world.alice), json={}, timeout=5)
    assert (r.status_code, r.json()) == (400, {"error": "description is missing"})
    r = requests.post(
        world.triggers_url(), headers=auth(world.alice), data={"description": "form"}, timeout=5
    )
    assert r.status_code == 201 and r.json()["description"] == "form"


def test_throttle_answers_429_retry_later(world: World) -> None:
    world.sb.faults.configure(throttle_rate=1.0, retry_after=7)
    r = requests.get(world.triggers_url(), headers=auth(world.alice), timeout=5)
    assert r.status_code == 429 and r.text == "Retry later"
    assert r.headers["Retry-After"] == "7" and r.headers["Content-Type"].startswith("text/plain")
    world.sb.reset_faults()
    assert requests.get(world.triggers_url(), headers=auth(world.alice), timeout=5).status_code == 200


def test_error_rate_and_fail_next(world: World) -> None:
    world.sb.fail_next(2, 503)
    statuses = [requests.get(world.api("/version"), headers=auth(world.alice), timeout=5) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 200]
    assert statuses[0].json() == {"message": "503 Service Unavailable"}
    world.sb.faults.error_rate = 1.0
    r = requests.get(world.api("/version"), headers=auth(world.alice), timeout=5)
    assert r.status_code in (500, 502, 503) and r.json()["message"].startswith(str(r.status_code))
    # Control calls are never faulted.
    assert requests.get(f"{world.sb.url}/-/health", timeout=5).text == "GitLab OK"
    r = requests.put(f"{world.sb.url}/-/sandbox/faults", json={"reset": True, "latency": 0.01}, timeout=5)
    assert r.json()["error_rate"] == 0.0 and world.sb.faults.latency == 0.01


def test_seeded_faults_are_deterministic() -> None:
    def draws(seed: int) -> list[int | None]:
        faults = Faults(error_rate=0.3, throttle_rate=0.2, seed=seed)
        return [faults._draw() for _ in range(50)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_latency_is_added(world: World) -> None:
    world.sb.faults.latency = 0.3
    start = time.monotonic()
    assert requests.get(world.api("/version"), headers=auth(world.alice), timeout=5).status_code == 200
    assert 0.3 <= time.monotonic() - start < 2.0


def test_drop_after_create_loses_the_response_not_the_trigger(world: World) -> None:
    world.sb.faults.drop_after_create = 1
    with pytest.raises(requests.ConnectionError):
        requests.post(
            world.triggers_url(), headers=auth(world.alice), json={"description": "lost"}, timeout=5
        )
    assert [t["description"] for t in world.sb.triggers(world.pid)] == ["lost"]
    assert world.sb.calls("POST")[-1].dropped
    assert create(world, world.alice, "answered")["description"] == "answered"
    assert world.sb.faults.drop_after_create == 0


def test_trigger_pipeline_creates_pipeline_and_sets_last_used(world: World) -> None:
    trig = create(world, world.alice)
    url = world.api(f"/projects/{world.pid}/trigger/pipeline")
    r = requests.post(url, json={"token": trig["token"], "ref": "main", "variables": {"A": "1"}}, timeout=5)
    assert r.status_code == 201, r.text
    pipeline = r.json()
    assert (pipeline["source"], pipeline["ref"], pipeline["project_id"]) == ("trigger", "main", world.pid)
    assert pipeline["user"]["username"] == "alice"
    last_used = world.sb.triggers(world.pid)[0]["last_used"]
    assert last_used == pipeline["created_at"] and ISO_MS_Z.fullmatch(last_used)
    assert world.sb.pipelines(world.pid)[0]["variables"] == {"A": "1"}

    other = world.sb.add_project("group/api", {"alice": MAINTAINER})
    r = requests.post(
        world.api(f"/projects/{other}/trigger/pipeline"),
        data={"token": trig["token"], "ref": "main"},
        timeout=5,
    )
    assert (r.status_code, r.json()) == (404, {"message": "404 Not Found"})
    r = requests.post(url, params={"token": "glptt-" + "0" * 40, "ref": "main"}, timeout=5)
    assert r.status_code == 404
    r = requests.post(url, data={"token": trig["token"], "ref": "nope"}, timeout=5)
    assert (r.status_code, r.json()) == (400, {"message": {"base": ["Reference not found"]}})
    assert world.sb.calls("POST", "trigger/pipeline")[-1].query == {}
    assert world.sb.calls("POST", "trigger/pipeline")[-2].query["token"] == "[REDACTED]"


def test_out_of_band_changes_and_delete(world: World) -> None:
    trig = world.sb.create_trigger_as("bob", world.pid, "by bob")
    world.sb.set_description(world.pid, trig["id"], "edited in the UI")
    r = requests.get(world.triggers_url(f"/{trig['id']}"), headers=auth(world.alice), timeout=5)
    assert r.json()["description"] == "edited in the UI" and len(r.json()["token"]) == 4
    r = requests.delete(world.triggers_url(f"/{trig['id']}"), headers=auth(world.alice), timeout=5)
    assert r.status_code == 204 and r.content == b""
    mine = create(world, world.alice)
    world.sb.delete_trigger("group/web", mine["id"])
    r = requests.get(world.triggers_url(f"/{mine['id']}"), headers=auth(world.alice), timeout=5)
    assert r.status_code == 404


def test_concurrent_creates_get_unique_ids(world: World) -> None:
    ids: list[int] = []

    def worker() -> None:
        with requests.Session() as s:
            for _ in range(10):
                r = s.post(
                    world.triggers_url(), headers=auth(world.alice), json={"description": "c"}, timeout=5
                )
                ids.append(r.json()["id"])

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 60 == len(world.sb.triggers(world.pid))


# ---- the per-user rate limit (Rack::Attack's throttle_authenticated_api, reference section 4)


def _reset_of(window: float) -> int:
    return int((math.floor(time.time() / window) + 1) * window)


def test_rate_limit_answers_429_with_rack_attack_headers(world: World) -> None:
    world.sb.faults.configure(rate_limit=2, rate_window=3600)  # 2 an hour: the third request is refused
    ok = [requests.get(world.triggers_url(), headers=auth(world.alice), timeout=5) for _ in range(2)]
    assert [r.status_code for r in ok] == [200, 200]
    assert not any(k.startswith("RateLimit-") for k in ok[1].headers)  # only on 429 unless the flag is on
    r = requests.get(world.triggers_url(), headers=auth(world.alice), timeout=5)
    now, reset = int(time.time()), _reset_of(3600)
    assert r.status_code == 429 and r.text == "Retry later"
    assert r.headers["Content-Type"].startswith("text/plain")
    h = r.headers
    assert h["RateLimit-Name"] == "throttle_authenticated_api"
    assert h["RateLimit-Limit"] == "1"  # 2 per 3,600 s, normalised to a minute and rounded up
    assert (h["RateLimit-Observed"], h["RateLimit-Remaining"]) == ("3", "0")
    assert h["RateLimit-Reset"] == str(reset)
    assert h["RateLimit-ResetTime"] == format_datetime(datetime.fromtimestamp(reset, UTC), usegmt=True)
    assert abs(int(h["Retry-After"]) - (reset - now)) <= 1  # seconds to the window's end
    # Every request counts, throttled ones too; each user has a count of their own.
    again = requests.get(world.triggers_url(), headers=auth(world.alice), timeout=5)
    assert (again.status_code, again.headers["RateLimit-Observed"]) == (429, "4")
    assert requests.get(world.triggers_url(), headers=auth(world.bob), timeout=5).status_code == 200
    assert (world.sb.faults.throttled("alice"), world.sb.faults.throttled("bob")) == (2, 0)
    assert world.sb.faults.throttled_windows("alice") == {reset // 3600 - 1: 2}
    control = requests.get(f"{world.sb.url}/-/sandbox/faults", timeout=5).json()
    assert control["throttled"] == {"alice": 2} and control["rate_limit"] == 2
    r = requests.put(f"{world.sb.url}/-/sandbox/faults", json={"throttled": {}, "latency": 0}, timeout=5)
    assert r.status_code == 200  # a count, not a knob: ignored when sent back


def test_rate_limit_headers_on_unthrottled_answers_when_enabled(world: World) -> None:
    # Self-managed defaults once enabled: 7,200 an hour per user (RateLimit-Limit 120 a minute).
    world.sb.faults.configure(rate_limit=7200, rate_window=3600, rate_limit_headers=True)
    r = requests.get(world.triggers_url(), headers=auth(world.alice), timeout=5)
    assert r.status_code == 200
    assert {k: v for k, v in r.headers.items() if k.startswith("RateLimit-")} == {
        "RateLimit-Name": "throttle_authenticated_api",
        "RateLimit-Limit": "120",
        "RateLimit-Observed": "1",
        "RateLimit-Remaining": "7199",
        "RateLimit-Reset": str(_reset_of(3600)),
    }
    assert "Retry-After" not in r.headers


def test_python_gitlab_waits_out_the_rate_limit(world: World) -> None:
    world.sb.faults.configure(rate_limit=3, rate_window=1)
    gl = gitlab.Gitlab(world.sb.url, private_token=world.alice.token)
    project = gl.projects.get(world.pid, lazy=True)
    for _ in range(7):  # python-gitlab sleeps Retry-After on a 429 and retries (obey_rate_limit)
        project.triggers.list(get_all=False)
    assert world.sb.faults.throttled("alice") >= 1  # 7 requests cannot fit two windows of 3


def test_a_burst_of_new_connections_is_queued_not_dropped() -> None:
    # socketserver's backlog of 5 dropped the 7th connect of a burst (the operator's workers opening
    # their first connections at once), which then waited for TCP's 1 s SYN retransmission. Nothing
    # accepts here, so only the listen queue holds them.
    from cloudtriggers.sandbox._http import SandboxHandler, SandboxServer

    server = SandboxServer(("127.0.0.1", 0), SandboxHandler, None)
    conns: list[socket.socket] = []
    host, port = server.server_address[:2]
    assert isinstance(host, str)  # an AF_INET server's address: (host, port)
    try:
        for _ in range(32):
            conns.append(socket.create_connection((host, port), timeout=0.5))
    finally:
        for conn in conns:
            conn.close()
        server.server_close()
    assert len(conns) == 32
