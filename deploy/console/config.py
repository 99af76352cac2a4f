"""The nameserver's `[console]` section (off unless `listen` is set)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.broker_config import parse_address
from core.config import require


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, slots=True)
class ConsoleSection:
    listen: str = field(
        default="",
        metadata=_doc("HOST:PORT of the web console (HTTPS with [tls]); port 0 picks one; empty: no console"),
    )
    profile: str = field(
        default="",
        metadata=_doc(
            "client profile the console asks the brokers with (a monitor account, monitor = true: "
            "group offsets and members, nothing that writes); empty: plaintext and unsigned"
        ),
    )
    refresh_ms: int = field(default=2000, metadata=_doc("how often the console samples the cluster"))
    history_points: int = field(
        default=150, metadata=_doc("points kept per chart series (150 x 2 s: the last 5 minutes)")
    )
    max_series: int = field(default=100, metadata=_doc("topics (and groups) charted at most"))
    deadline_ms: int = field(
        default=5000,
        metadata=_doc(
            "a refresh's overall deadline: a broker that has not answered by then is marked late "
            "and the refresh goes on without it"
        ),
    )
    parallel: int = field(default=8, metadata=_doc("brokers asked at once by a refresh, at most"))
    max_topics_sampled: int = field(
        default=200, metadata=_doc("topics whose offsets are sampled for rates each refresh, at most")
    )

    def validate(self, prefix: str = "console") -> None:
        if self.listen:
            parse_address(self.listen, f"{prefix}.listen")
        require(100 <= self.refresh_ms <= 600_000, f"{prefix}.refresh_ms", "must be 100..600000")
        require(2 <= self.history_points <= 10_000, f"{prefix}.history_points", "must be 2..10000")
        require(1 <= self.max_series <= 1000, f"{prefix}.max_series", "must be 1..1000")
        require(100 <= self.deadline_ms <= 600_000, f"{prefix}.deadline_ms", "must be 100..600000")
        require(1 <= self.parallel <= 64, f"{prefix}.parallel", "must be 1..64")
        require(0 <= self.max_topics_sampled <= 10_000, f"{prefix}.max_topics_sampled", "must be 0..10000")
