"""The conformance tests' shared parts: a secure harness cluster with a
`tailrace proxy`, and the official RocketMQ 5 client run in its own process
(tests/helpers/rmq_client.py; pytest never imports `rocketmq`: it logs
under $HOME at import, needs opentelemetry and warns)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.harness import Cluster, ProcessGroup, TailraceProcess
from deploy.pki import LocalPki

HELPER = Path(__file__).resolve().parent / "rmq_client.py"


@dataclass
class Setup:
    procs: ProcessGroup
    pki: LocalPki
    cluster: Cluster
    proxy: TailraceProcess
    home: Path

    @property
    def endpoint(self) -> str:
        return str(self.proxy.info["endpoint"])

    def spec(self, **spec: Any) -> dict[str, Any]:
        """A client spec for this cluster (TLS, the admin account), with `spec` over it."""
        base = {"endpoints": self.endpoint, "tls": True, "ak": "admin", "sk": self.pki.admin_secret}
        return {**base, **spec}


def client_env(home: Path, ca_file: Path, tz: str = "UTC") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TAILRACE_PROFILE"}
    env.update(HOME=str(home), TZ=tz, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(ca_file))
    return env


def official(
    home: Path, ca_file: Path, spec: dict[str, Any], timeout_s: float = 60, tz: str = "UTC"
) -> dict[str, Any]:
    """The official client in its own process (in time zone `tz`), run to
    its end; its log stays under `home`."""
    r = subprocess.run(
        [sys.executable, str(HELPER)], input=json.dumps(spec) + "\n", capture_output=True, text=True,
        env=client_env(home, ca_file, tz), cwd=home, timeout=timeout_s,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


class Running:
    """The official client in its own process until `stop` (its stdin
    closed: a push consumer consumes until then)."""

    def __init__(self, home: Path, ca_file: Path, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=client_env(home, ca_file), cwd=home,
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout_s: float = 30) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout_s)  # closes stdin: the client stops
        finally:
            self.kill()
        assert self.proc.returncode == 0, out + err
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
