"""The web console in a real browser (headless Chromium, Debian's
`chromium`, driven over the DevTools protocol: tests/helpers/browser.py)
against a real cluster that `tailrace cluster up` started (a master and
two slaves, TLS and accounts on, a 1 MiB page-cache budget so that a cold
consumer is sent to a slave, as in test_redirect.py).

The page is loaded once and signed in as the admin; everything after is
the page's own polling: it shows the master and both slaves, a queue
read from a slave with the advice's reason, and a lagging group's lag
falling as its consumer catches up. `TAILRACE_CONSOLE_SCREENSHOT=FILE`
keeps a screenshot there (docs/console.png is one).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from consumer import Admin, Producer, PullConsumer
from core.route import MessageQueue
from deploy import cluster
from deploy.topology import resolve_topology
from deploy.waits import poll_until, wait_caught_up
from tests.helpers.browser import Browser, chromium_binary

pytestmark = pytest.mark.integration
BUDGET = 1024 * 1024
PER_QUEUE = 2048  # x 2 queues x ~1.1 KiB: about 4.5 MiB behind, well over the budget
GROUP = "lagging"


def queues(b: Browser) -> list[dict[str, Any]]:
    rows = b.eval("JSON.stringify([...document.querySelectorAll('tr.queue')].map(r => ({...r.dataset})))")
    return [r for r in json.loads(rows) if r["group"] == GROUP]


def shown_lag(b: Browser) -> int:
    return sum(int(r["lag"]) for r in queues(b))


def test_the_console_in_a_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert chromium_binary(), "no chromium: `make test` installs it (deploy/install_chromium.sh)"
    d = tmp_path / "c"
    sets = [f"pull.budget_bytes={BUDGET}", "store.max_message_bytes=1048576"]
    state = cluster.up(resolve_topology("local-1m-2s"), d, sets)
    try:
        url = state["console_url"]
        assert (
            url.startswith("https://127.0.0.1:") and (cluster.read_state(d) or {}).get("console_url") == url
        )
        profile = Path(state["profile"])
        monkeypatch.setenv("TAILRACE_PROFILE", str(profile))
        by_role = {p["role"]: p for p in state["processes"]}
        master = by_role["master"]["address"]
        slaves = [p["address"] for p in state["processes"] if p["role"] == "slave"]
        ns_cert = (d / "tls" / "namesrv-1.pem").read_bytes()
        with Admin() as admin:
            admin.create_topic("B", 2)
        with Producer() as producer:
            for q in (0, 1):
                for i in range(0, PER_QUEUE, 256):
                    body = [f"{q}:{j}:".encode() + b"x" * 1000 for j in range(i, i + 256)]
                    producer.send_batch("B", body, queue=MessageQueue("broker-a", q))
        wait_caught_up(master, slaves)

        with Browser(tmp_path, trust_cert=ns_cert) as b:
            b.goto(url)
            poll_until(lambda: b.eval("document.body.dataset.state") == "signin", 30, "the sign-in form")
            b.eval("window.loadedOnce = 'yes'")  # gone if the page were reloaded
            secret = json.dumps(_admin_secret(profile))  # typed in, as a user would
            b.eval(
                "document.getElementById('ak').value = 'admin';"
                f"document.getElementById('sk').value = {secret};"
                "document.getElementById('signin').requestSubmit()"
            )
            poll_until(lambda: b.eval("document.body.dataset.state") == "ok", 30, "signed in")

            # the master and both slaves, up, the slaves in sync
            def brokers() -> list[dict[str, str]]:
                js = "JSON.stringify([...document.querySelectorAll('tr.broker')].map(r => ({...r.dataset})))"
                return list(json.loads(b.eval(js)))

            poll_until(lambda: [(r["brokerId"], r["role"], r["alive"]) for r in brokers()]
                       == [("0", "master", "yes"), ("1", "slave", "yes"), ("2", "slave", "yes")],
                       30, "the master and both slaves on the page")  # fmt: skip
            poll_until(lambda: "B" in b.eval("document.getElementById('chart-rates').dataset.series"),
                       30, "topic B charted")  # fmt: skip

            c = PullConsumer(group=GROUP, topic="B", heartbeat_ms=200, max_messages=64)
            try:
                consumed = 0
                while sum(c.served_by[s] for s in (1, 2)) < 256:  # cold: the master sends it to a slave
                    consumed += len(c.poll(500))
                    assert consumed < 2 * PER_QUEUE, dict(c.served_by)
                c.commit()

                # a queue served by a slave, with the advice's reason; the group's lag shown
                def redirected() -> bool:
                    return any(r["readFrom"] == "slave" for r in queues(b))

                poll_until(redirected, 30, "a queue shown as read from a slave")
                slave_rows = [r for r in queues(b) if r["readFrom"] == "slave"]
                assert all(r["readBroker"] in ("1", "2") for r in slave_rows), slave_rows
                # and why: the master's advice that sent the consumer there
                assert {r["reason"] for r in slave_rows} == {"backlog_over_budget"}, slave_rows
                poll_until(lambda: shown_lag(b) == 2 * PER_QUEUE - consumed, 30, "the lag after the commit")
                lag_before = shown_lag(b)
                assert lag_before > 0
                shot = tmp_path / "console.png"
                b.screenshot(shot)
                if os.environ.get("TAILRACE_CONSOLE_SCREENSHOT"):
                    shutil.copy(shot, os.environ["TAILRACE_CONSOLE_SCREENSHOT"])

                # it catches up in steps: the page, never reloaded, shows each committed lag in turn,
                # two values between the first and 0 (a page that only ever showed ">0, then 0" fails)
                seen = [lag_before]
                for goal in (2 * lag_before // 3, lag_before // 3, 0):
                    while 2 * PER_QUEUE - consumed > goal:
                        consumed += len(c.poll(500))
                    c.commit()
                    want = 2 * PER_QUEUE - consumed
                    poll_until(lambda w=want: shown_lag(b) == w, 30, f"the lag at {want} on the page")
                    seen.append(want)
                assert b.eval("window.loadedOnce") == "yes"  # live updates, no reload
                assert seen[-1] == 0 and len([x for x in seen if x > 0]) >= 3, seen
                assert all(x > y for x, y in itertools.pairwise(seen)), seen
            finally:
                c.close()
    finally:
        cluster.down(d)


def _admin_secret(profile: Path) -> str:
    import tomllib

    return str(tomllib.loads(profile.read_text())["secret_key"])
