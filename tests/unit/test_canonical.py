"""Idempotency compares the decoded request: a property of `canonical_body`."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from api.http.gateway import canonical_body

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def _reserialised(value: Any, seed: int) -> bytes:
    """The same JSON value written another way: object keys shuffled, other whitespace."""
    rng = random.Random(seed)

    def shuffle(v: Any) -> Any:
        if isinstance(v, dict):
            items = [(k, shuffle(x)) for k, x in v.items()]
            rng.shuffle(items)
            return dict(items)
        if isinstance(v, list):
            return [shuffle(x) for x in v]
        return v

    separators = rng.choice([(",", ":"), (", ", ": "), (" , ", " : ")])
    text = json.dumps(shuffle(value), indent=rng.choice([None, 2]), separators=separators)
    return ("\n " * rng.randint(0, 2) + text + " \t" * rng.randint(0, 2)).encode()


@given(value=values, seed=st.integers(0, 2**32))
def test_a_re_serialised_request_is_the_same_request(value: Any, seed: int) -> None:
    """Invariant: whitespace and key order never make a retry a different request."""
    assert canonical_body(_reserialised(value, seed)) == canonical_body(json.dumps(value).encode())


@given(a=values, b=values)
def test_different_requests_stay_different(a: Any, b: Any) -> None:
    """Invariant: two requests whose decoded JSON differs never share a canonical form (so a
    reused key with another body is 422, never a replay of the other answer)."""
    same = canonical_body(json.dumps(a).encode()) == canonical_body(json.dumps(b).encode())
    assert same == (
        json.loads(json.dumps(a)) == json.loads(json.dumps(b)) and _typed(a) == _typed(b)
    )


def _typed(v: Any) -> Any:
    """A value with each scalar tagged by its JSON type (`1` and `true` differ)."""
    if isinstance(v, dict):
        return {k: _typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_typed(x) for x in v]
    return (type(v).__name__, v)
