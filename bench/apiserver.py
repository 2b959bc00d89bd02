"""`python -m bench.apiserver [--tls] KUBECONFIG`: the emulated API server in a process of its own,
writing a kubeconfig for it, until interrupted. `python -m bench --kubeconfig KUBECONFIG` then runs as
against a real API server, with the server's CPU off the bench process (which keeps the sandboxes and
clients). `--tls` serves HTTPS with a CA and a client certificate of its own, as a kind cluster does
(.ci/run runs tests/e2e so)."""

from __future__ import annotations

import sys
import time

from cloudtriggers.sandbox.kube import KubeServer


def main(argv: list[str]) -> int:
    tls = "--tls" in argv
    argv = [a for a in argv if a != "--tls"]
    if len(argv) != 1:
        print("usage: python -m bench.apiserver [--tls] KUBECONFIG", file=sys.stderr)
        return 2
    server = KubeServer(install_crd=False, tls=tls).start()  # the bench applies the CRD, as on a cluster
    try:
        server.write_kubeconfig(argv[0])
        print(f"serving {server.url}; kubeconfig {argv[0]}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
