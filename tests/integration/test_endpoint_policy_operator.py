"""The endpoint policy in the running operator: without the explicit loopback allowance that the
demo and the tests give, a Trigger pointed at the (loopback, plain http) sandbox is refused with a
reason of its own, the sandbox receives nothing, and the Trigger deletes without waiting."""

from __future__ import annotations

import time

from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings


def test_a_refused_endpoint_gets_no_request_and_deletes_at_once() -> None:
    with LocalWorld(Settings(allowed_endpoints=[], credentials_poll=0.5)) as world:
        user = world.gitlab.add_user("bot")
        world.gitlab.add_project("demo/web", members={user.username: MAINTAINER})
        world.apply_secret("apps", "gl", {"token": user.token})
        world.start_operator()
        world.create_trigger(
            {
                "apiVersion": "cloudtriggers.io/v1alpha1",
                "kind": "Trigger",
                "metadata": {"name": "web", "namespace": "apps"},
                "spec": {
                    "gitlab": {"url": world.gitlab.url, "project": "demo/web"},
                    "credentialsSecretRef": {"name": "gl"},
                },
            }
        )
        wait_for(
            lambda: condition(world.trigger("apps", "web")).get("reason") == "EndpointNotAllowed", timeout=15
        )
        ready = condition(world.trigger("apps", "web"))
        assert ready["status"] == "False" and "plain http is refused" in ready["message"]
        time.sleep(2)  # no retry either: nothing changes until the spec does
        assert world.gitlab.calls() == []
        world.delete_trigger("apps", "web")
        wait_for(lambda: world.trigger("apps", "web") is None, timeout=10)
        assert world.gitlab.calls() == []
