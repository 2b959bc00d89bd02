"""The emulated API over TLS (KubeServer(tls=True), `python -m bench.apiserver --tls`), as a kind
cluster serves it: a server certificate from a CA of its own, a client certificate required, both
embedded in the kubeconfig it writes. .ci/run runs tests/e2e against it, so that every client of ours
is configured from such a kubeconfig end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cloudtriggers.kube import KubeClient
from cloudtriggers.sandbox.kube import KubeServer


def test_clients_configured_from_the_kubeconfig_get_in_and_others_do_not(tmp_path: Path) -> None:
    with KubeServer(tls=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        kubeconfig = tmp_path / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        new_client = cast(Callable[..., k8s.ApiClient], k8s_config.new_client_from_config)
        api = new_client(config_file=str(kubeconfig))
        names = [ns.metadata.name for ns in k8s.CoreV1Api(api).list_namespace().items if ns.metadata]
        assert "default" in names
        # The operator's own connections (kube_http.py), from the same configuration.
        got: Any = KubeClient(api).request_json("GET", "/api/v1/namespaces/default")
        assert got["metadata"]["name"] == "default"

        pki = server.pki
        assert pki is not None
        ca = tmp_path / "ca.crt"
        ca.write_bytes(pki.ca)
        # Trusting the CA is not enough: the handshake wants the client certificate.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{server.url}/api", verify=str(ca), timeout=5)
        cert, key = tmp_path / "client.crt", tmp_path / "client.key"
        cert.write_bytes(pki.client_cert)
        key.write_bytes(pki.client_key)
        assert requests.get(f"{server.url}/api", verify=str(ca), cert=(str(cert), str(key)), timeout=5).ok
        # And a client that does not trust the CA refuses the server.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.url}/api", cert=(str(cert), str(key)), timeout=5)
