"""Sealed answers for repeated refreshes (gateway/oidc/repeats.py)."""

from __future__ import annotations

import secrets

from hypothesis import given
from hypothesis import strategies as st

from gateway.oidc.repeats import open_answer, seal_answer

ANSWERS = st.fixed_dictionaries({
    "access_token": st.text(min_size=1, max_size=60), "refresh_token": st.text(min_size=1, max_size=60),
    "token_type": st.sampled_from(["Bearer", "DPoP"]), "expires_in": st.integers(0, 86400),
    "scope": st.text(max_size=40)})


@given(ANSWERS)
def test_an_answer_opens_under_the_token_that_sealed_it(answer: dict[str, object]) -> None:
    token = secrets.token_urlsafe(32)
    assert open_answer(token, seal_answer(token, dict(answer), now=1000), now=1000) == answer


def test_another_token_or_a_changed_byte_opens_nothing() -> None:
    token = secrets.token_urlsafe(32)
    sealed = seal_answer(token, {"access_token": "a", "expires_in": 60})
    assert open_answer(secrets.token_urlsafe(32), sealed) is None
    assert open_answer(token, sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert open_answer(token, b"short") is None


def test_expires_in_counts_from_the_repeat() -> None:
    token = secrets.token_urlsafe(32)
    sealed = seal_answer(token, {"access_token": "a", "expires_in": 60}, now=1000)
    assert open_answer(token, sealed, now=1025) == {"access_token": "a", "expires_in": 35}
    assert open_answer(token, sealed, now=2000) == {"access_token": "a", "expires_in": 0}
