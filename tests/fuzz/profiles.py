"""Hypothesis profiles of the fuzz set (tests/fuzz), registered before pytest
reads `--hypothesis-profile` (tests/conftest.py imports this module).

- `fuzz-ci` (the default): CI_EXAMPLES examples for a target of weight 1,
  derandomized (the same examples on every run: a CI failure reproduces
  exactly), no deadline (a 2-core machine shared with other tests has slow
  moments), no example database written.
- `fuzz-long` (`make fuzz`): LONG_EXAMPLES, a new random seed per run (it
  explores; hypothesis prints the seed and a reproduction blob on failure),
  failures kept in `.hypothesis/` so the next run tries them first.

`TAILRACE_FUZZ_EXAMPLES=N` replaces the examples of a weight-1 target in
either profile. A test asks for `examples(weight)`: targets whose examples
cost more (a store opened per example) take a smaller share.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 200
LONG_EXAMPLES = 2000
ENV = "TAILRACE_FUZZ_EXAMPLES"
_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def _from_env(default: int) -> int:
    raw = os.environ.get(ENV, "")
    if not raw:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise SystemExit(f"{ENV} must be a whole number, got {raw!r}") from None
    if n <= 0:
        raise SystemExit(f"{ENV} must be positive, got {n}")
    return n


settings.register_profile(
    "fuzz-ci",
    max_examples=_from_env(CI_EXAMPLES),
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
)
settings.register_profile(
    "fuzz-long",
    max_examples=_from_env(LONG_EXAMPLES),
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
)
settings.load_profile("fuzz-ci")  # `--hypothesis-profile` replaces it after this import


def examples(weight: float = 1.0) -> int:
    """Examples for a target of `weight` under the loaded profile (read when
    a test module is imported, after pytest loaded the profile)."""
    current = settings.default
    assert current is not None  # a profile is always loaded (above)
    return max(10, round(current.max_examples * weight))
