"""The server key: never a public constant; embedded mode generates one; tokens' registry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import InvalidToken
from hypothesis import given
from hypothesis import strategies as st

from adapters.records import TokenIssued, TokenRevoked
from api.service.tokens import active_tokens, new_token, principal_of, sealer
from api.settings import SECRET_FILE, SecretKeyMissing, Settings, _embedded_secret

PG = "postgresql://postgres@127.0.0.1:5432/x"


def test_a_server_on_postgresql_without_a_key_has_no_secret() -> None:
    """Invariant: no key is ever derived from a public constant or from the admin token."""
    for settings in (
        Settings(database_url=PG),
        Settings(database_url=PG, admin_token="bootstrap-token"),
    ):
        with pytest.raises(SecretKeyMissing) as raised:
            settings.token_secret  # noqa: B018
        message = str(raised.value)
        assert "ATP_SECRET_KEY" in message and "\n" not in message


def test_a_short_key_is_refused() -> None:
    with pytest.raises(SecretKeyMissing, match="too short"):
        Settings(database_url=PG, secret_key="change-me-too").token_secret  # noqa: B018
    key = "k" * 32
    assert Settings(database_url=PG, secret_key=key).token_secret == key.encode()


def test_embedded_mode_generates_a_private_key_once(tmp_path: Path) -> None:
    """Invariant: the generated key is random, mode 0600, and every later start reuses it
    (whatever the admin token is)."""
    first = Settings(data_dir=str(tmp_path / "a"), admin_token="one").token_secret
    path = tmp_path / "a" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _embedded_secret.cache_clear()  # as a restarted process would
    assert Settings(data_dir=str(tmp_path / "a"), admin_token="two").token_secret == first
    assert Settings(data_dir=str(tmp_path / "b"), admin_token="one").token_secret != first
    assert len(first) >= 32


def _key_of(data_dir: str) -> bytes:
    return Settings(data_dir=data_dir).token_secret


def test_workers_starting_together_agree_on_the_generated_key(tmp_path: Path) -> None:
    with ProcessPoolExecutor(4) as pool:
        keys = set(pool.map(_key_of, [str(tmp_path)] * 8))
    assert len(keys) == 1


def test_an_issued_token_is_random_not_derived() -> None:
    """The old scheme: HMAC(sha256("atp-secret:" + admin token), name/key/body). Offline
    computable when the admin token is unset or known; the new tokens are not."""
    public = hashlib.sha256(b"atp-secret:").digest()
    derive = 'ops\x1fk1\x1f{"name":"x","scopes":["admin"],"rate_limit":null}'
    guess = hmac.new(public, derive.encode(), hashlib.sha256).digest()
    offline = "atp_" + base64.urlsafe_b64encode(guess).decode().rstrip("=")
    tokens = {new_token() for _ in range(100)}
    assert offline not in tokens and len(tokens) == 100


def test_a_sealed_token_opens_only_under_its_key() -> None:
    box = sealer(b"k" * 32, b"purpose")
    sealed = box.encrypt(b"atp_secret")
    assert box.decrypt(sealed) == b"atp_secret"
    with pytest.raises(InvalidToken):
        sealer(b"j" * 32, b"purpose").decrypt(sealed)
    with pytest.raises(InvalidToken):
        sealer(b"k" * 32, b"other purpose").decrypt(sealed)


# --- the token registry: names are unique among live tokens ----------------------------------

NAMES = st.sampled_from(["shop", "feed", "ops"])
_T = datetime(2026, 11, 30, tzinfo=UTC)


@given(st.lists(st.tuples(st.booleans(), NAMES, st.integers(0, 3)), max_size=30))
def test_registry_folds_issues_and_revocations(steps: list[tuple[bool, str, int]]) -> None:
    """Invariant: a name is live iff its latest issue was not revoked since; a revocation of
    an older token of the name leaves the newer one live; a revoked stream grants nothing."""
    records: list[object] = []
    model: dict[str, str] = {}
    for issue, name, n in steps:
        digest = f"{name}-{n}"
        if issue:
            records.append(TokenIssued(name=name, scopes=("admin",), token_hash=digest))
            model[name] = digest
        else:
            records.append(TokenRevoked(name=name, token_hash=digest, revoked_at=_T))
            if model.get(name) == digest:
                del model[name]
    assert {k: v.token_hash for k, v in active_tokens(records).items()} == model
    for name, digest in model.items():
        own = [r for r in records if getattr(r, "token_hash", None) == digest]
        granted = principal_of(own, digest)
        if isinstance(own[-1], TokenIssued):
            assert granted is not None and granted.name == name and granted.key == digest
