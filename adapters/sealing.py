"""Integration secrets sealed at rest: WooCommerce keys and webhook secrets, marketplace
credentials and tokens are kept in the ledger's events table only as Fernet tokens
(AES-128-CBC + HMAC-SHA256, `cryptography.fernet`), never in plain text.

The Fernet key is derived from the service key (`Settings.token_secret`, bytes) with
HKDF-SHA256 (RFC 5869) and a purpose label, so the same service key never serves two
purposes directly. A sealed value is the string `"fernet:" + token`; a list (webhook
secrets) is sealed as its JSON. A value without the prefix is a record written before
sealing existed and is read as it is (the next PUT of the integration seals it).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "fernet:"
INFO = b"atp integration secrets v1"


class SealError(Exception):
    """A sealed secret cannot be opened with this service key (the key changed?)."""


def derive_key(service_key: bytes, purpose: bytes) -> bytes:
    """32 bytes for one purpose from the service key: HKDF-SHA256 (RFC 5869) of the key with
    `purpose` as its info, so keys for different purposes are independent. Raises
    ValueError for an empty key."""
    if not service_key:
        raise ValueError("sealing needs a service key")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(service_key)


def fernet_for(service_key: bytes, purpose: bytes = INFO) -> Fernet:
    """A Fernet (AES-128-CBC + HMAC-SHA256) keyed for one purpose from the service key:
    HKDF-SHA256 (RFC 5869) of the key with `purpose` as its info -> 32 bytes -> urlsafe
    base64, so keys for different purposes are independent. Decrypting under another key
    raises cryptography.fernet.InvalidToken. Raises ValueError for an empty key."""
    return Fernet(base64.urlsafe_b64encode(derive_key(service_key, purpose)))


def is_sealed(value: object) -> bool:
    """Whether a settings value is a sealed secret (`"fernet:..."`)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(value: object, service_key: bytes) -> str:
    """A secret (str, or a list of str) as a sealed string."""
    raw = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return PREFIX + fernet_for(service_key).encrypt(raw.encode()).decode()


def unseal(value: object, service_key: bytes, *, as_list: bool = False) -> Any:
    """The secret a `seal` made (a value that is not sealed is returned as it is). Raises
    SealError when the token does not open with this key."""
    if not is_sealed(value):
        return value
    assert isinstance(value, str)
    try:
        raw = fernet_for(service_key).decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise SealError(
            "an integration secret does not open with this service key "
            "(ATP_SECRET_KEY changed?); configure the integration's secrets again"
        ) from None
    return json.loads(raw) if as_list else raw


def seal_settings(
    settings: Mapping[str, Any], names: Iterable[str], service_key: bytes
) -> dict[str, Any]:
    """A copy of integration settings with the named secret fields sealed (None stays
    None; an already sealed value is kept)."""
    out = dict(settings)
    for name in names:
        value = out.get(name)
        if value is not None and not is_sealed(value):
            out[name] = seal(value, service_key)
    return out


def open_settings(
    settings: Mapping[str, Any], names: Iterable[str], service_key: bytes
) -> dict[str, Any]:
    """A copy of integration settings with the named secret fields opened; list-valued
    fields (`webhook_secrets`) come back as lists. Raises SealError."""
    out = dict(settings)
    for name in names:
        value = out.get(name)
        if is_sealed(value):
            out[name] = unseal(value, service_key, as_list=name in LIST_SECRETS)
    return out


LIST_SECRETS = frozenset({"webhook_secrets"})
SECRETS: dict[str, tuple[str, ...]] = {
    "woocommerce": ("consumer_key", "consumer_secret", "webhook_secrets"),
    "amazon": ("access_token", "client_id", "client_secret", "refresh_token"),
    "ebay": ("access_token", "client_id", "client_secret", "refresh_token"),
}
"""Integration kind -> its write-only, sealed settings."""
