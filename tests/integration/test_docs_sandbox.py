"""docs/sandbox.md works: its manifests reach Ready against sandboxes set up as the sandbox command does."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"


def test_sandbox_walkthrough_reaches_ready_for_every_provider() -> None:
    text = DOC.read_text()
    block = re.search(r"kubectl apply -f - <<'YAML'\n(.*?)\nYAML", text, re.S)
    assert block, "docs/sandbox.md lost its manifests"
    with LocalWorld() as world:
        # What the sandbox command creates (see each sandbox module's serve()).
        user = world.gitlab.add_user("cloudtriggers-bot")
        world.gitlab.add_project("demo/web", members={user.username: MAINTAINER})
        ack = world.ack.add_account("demo")
        world.ack.add_cluster("demo", "c" + "0" * 31, applications=("default/web", "default/api"))
        swr = world.swr.add_account("cloudtriggers-bot")
        world.swr.add_repository("demo", "web")
        ports = {"8929": world.gitlab.url, "8931": world.ack.url, "8930": world.swr.url}
        manifest = re.sub(r"http://127\.0\.0\.1:(89\d\d)", lambda m: ports[m.group(1)], block.group(1))
        world.apply_secret("apps", "gitlab-credentials", {"token": user.token})
        world.apply_secret(
            "apps",
            "ack-credentials",
            {"accessKeyId": ack.access_key_id, "accessKeySecret": ack.access_key_secret},
        )
        world.apply_secret(
            "apps",
            "swr-credentials",
            {"accessKey": swr.access_key, "secretKey": swr.secret_key, "projectId": swr.project_id},
        )
        world.start_operator()
        names = []
        for doc in yaml.safe_load_all(manifest):
            world.create_trigger(doc)
            names.append(doc["metadata"]["name"])
        assert len(names) == 3
        for name in names:

            def available(name: str = name) -> bool:
                return condition(world.trigger("apps", name)).get("reason") == "Available"

            wait_for(available, timeout=15)
