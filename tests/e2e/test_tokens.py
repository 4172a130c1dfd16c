"""Tokens done right: no derivable secret, identity-scoped idempotency, unique names, listing
and revocation across worker processes, and bounds an unauthenticated client cannot stretch.

Tests on the shared `server` (PostgreSQL, two workers) use their own token names; the ones
that restart the service or change its limits run their own embedded service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.settings import SECRET_FILE
from tests.e2e.route_helpers import assert_problem, created
from tests.support.server import ADMIN_TOKEN, Server, running_service, service_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WORKER_CONNECTIONS = 8
"""Connections opened to the two-worker service: spread over both workers by the kernel."""


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = service_env(None, data_dir=str(data_dir), **extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def issue(c: httpx.Client, name: str, scopes: list[str], **headers: str) -> httpx.Response:
    return c.post("/v1/tokens", json={"name": name, "scopes": scopes}, headers=headers)


def listed(c: httpx.Client) -> dict[str, dict[str, Any]]:
    r = c.get("/v1/tokens")
    assert r.status_code == 200, r.text
    return {t["name"]: t for t in r.json()["tokens"]}


# --- §1: no secret from a public constant; replays survive the admin token -------------------


def test_a_replayed_issue_returns_the_same_working_token_after_the_admin_token_is_gone(
    tmp_path: Path,
) -> None:
    """Story: the installer bootstraps an `ops` admin token with ATP_ADMIN_TOKEN, removes
    ATP_ADMIN_TOKEN (as one should) and restarts. `ops` issues the shop's token with an
    Idempotency-Key, loses the answer, and retries after the admin token was set again to a
    new value (which also retries its own issue of `ops`).

    Invariant: each retry answers the very token of the first answer, and it works; the token
    is not the one anyone could compute offline from the old public fallback key; the
    ledger files never hold a token in plain text; the generated key file is mode 0600."""
    env = embedded_env(tmp_path)
    with running_service(env) as server, server.client() as admin:
        bootstrap = issue(admin, "ops", ["admin"], **{"Idempotency-Key": "issue-ops"})
        ops = created(bootstrap)["token"]
    body = {"name": "shop", "scopes": ["availability:read"]}
    env.pop("ATP_ADMIN_TOKEN")
    with running_service(env) as server, server.client(ops) as c:
        first = c.post("/v1/tokens", json=body, headers={"Idempotency-Key": "issue-shop"})
        shop = created(first)["token"]
    # The old scheme: HMAC of a constant-derived key over the issuer's name, key and body.
    public = hashlib.sha256(b"atp-secret:").digest()
    derive = 'ops\x1fissue-shop\x1f{"name":"shop","scopes":["availability:read"],"rate_limit":null}'
    guess = hmac.new(public, derive.encode(), hashlib.sha256).digest()
    assert shop != "atp_" + base64.urlsafe_b64encode(guess).decode().rstrip("=")

    env["ATP_ADMIN_TOKEN"] = "a-rotated-admin-token"
    with running_service(env) as server, server.client(ops) as c:
        again = c.post("/v1/tokens", json=body, headers={"Idempotency-Key": "issue-shop"})
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        with server.client(shop) as s:
            assert s.get("/v1/locations").status_code == 200
        with server.client(ADMIN_TOKEN) as retired:
            assert_problem(retired.get("/v1/locations"), 401, "unauthorized")
        # The rotated admin token is the same principal: its retry answers the same `ops`.
        with server.client("a-rotated-admin-token") as admin:
            retried = issue(admin, "ops", ["admin"], **{"Idempotency-Key": "issue-ops"})
            assert retried.status_code == 201 and retried.json() == bootstrap.json()
        assert set(listed(c)) == {"ops", "shop"}

    key_file = tmp_path / SECRET_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != key_file)
    assert stored, "the ledger files were not found"
    for token in (ops, shop):
        assert token.encode() not in stored


def test_a_replay_after_the_server_key_changed_says_so_and_the_token_still_works(
    tmp_path: Path,
) -> None:
    """Story: the operator replaces ATP_SECRET_KEY while a client still retries a token
    issue. Invariant: the retry is a 409 `token-unrecoverable` problem (never another
    token, never a wrong one, no second token issued) and the issued token keeps working."""
    env = embedded_env(tmp_path, ATP_SECRET_KEY="a" * 32)
    body = {"name": "feed", "scopes": ["availability:read"]}
    with running_service(env) as server, server.client() as admin:
        feed = created(admin.post("/v1/tokens", json=body, headers={"Idempotency-Key": "f"}))
    env["ATP_SECRET_KEY"] = "b" * 32
    with running_service(env) as server, server.client() as admin:
        again = admin.post("/v1/tokens", json=body, headers={"Idempotency-Key": "f"})
        assert_problem(again, 409, "token-unrecoverable")
        assert set(listed(admin)) == {"feed"}
        with server.client(feed["token"]) as c:
            assert c.get("/v1/locations").status_code == 200


def test_a_server_on_postgresql_without_a_key_refuses_to_start(pg_url: str) -> None:
    """Invariant: no ATP_SECRET_KEY with ATP_DATABASE_URL: exit non-zero, one line naming the
    variable, before serving anything."""
    env = service_env(pg_url)
    env.pop("ATP_SECRET_KEY")
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ATP_SECRET_KEY" in lines[0], done.stderr


# --- §2: names unique, `admin` reserved, idempotency scoped by token identity -----------------


def test_two_admins_racing_for_one_name_get_one_token(server: Server, unique: str) -> None:
    """Story: two operators' scripts issue the shop's token at the same moment on both
    workers. Invariant: exactly one 201 and the others 409; one live token of that name;
    `admin` (any case) and names that cannot be a path segment are 422 naming `name`."""
    name = f"{unique}-shop"

    def attempt(_: int) -> httpx.Response:
        with server.client() as c:
            return issue(c, name, ["availability:read"])

    with ThreadPoolExecutor(WORKER_CONNECTIONS) as pool:
        answers = list(pool.map(attempt, range(WORKER_CONNECTIONS)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] + [409] * (WORKER_CONNECTIONS - 1), statuses
    for r in answers:
        if r.status_code == 409:
            assert_problem(r, 409, "already-exists")
    token = next(r.json()["token"] for r in answers if r.status_code == 201)
    with server.client() as c:
        assert listed(c)[name]["scopes"] == ["availability:read"]
    with server.client(token) as shop:
        assert shop.get("/v1/locations").status_code == 200
    with server.client() as c:
        for bad in ("admin", "Admin", "shop/eu", "shop\nfront", "", "admin#1234abcd"):
            assert_problem(issue(c, bad, ["reservations:write"]), 422, field="name")
        assert "admin" not in listed(c)


def test_a_reissued_name_never_replays_the_old_tokens_answers(server: Server, unique: str) -> None:
    """Story: a till's token leaks; ops deletes it and issues a new one under the same name;
    the till's software restarts its Idempotency-Key counter at 1.

    Invariant: the new token's first reservation is its own (a second hold: available drops
    by 2 in all), never a replay of the old token's reservation."""
    wh, web, sku = f"{unique}-WH", f"{unique}-web", f"{unique}-A"
    with server.client() as admin:
        created(admin.put(f"/v1/locations/{wh}", json={"name": "WH", "kind": "warehouse"}), 200)
        created(admin.put(f"/v1/channels/{web}", json={"locations": [wh]}), 200)
        created(
            admin.post(
                "/v1/receipts", json={"location": wh, "lines": [{"sku": sku, "quantity": 5}]}
            )
        )
        old = created(issue(admin, f"{unique}-till", ["reservations:write"]))["token"]
    hold = {"channel": web, "lines": [{"sku": sku, "quantity": 1}], "ttl_seconds": 600}
    key = {"Idempotency-Key": "1"}
    with server.client(old) as till:
        first = created(till.post("/v1/reservations", json=hold, headers=key))
    with server.client() as admin:
        assert admin.delete(f"/v1/tokens/{unique}-till").status_code == 200
        new = created(issue(admin, f"{unique}-till", ["reservations:write"]))["token"]
    with server.client(new) as till:
        second = till.post("/v1/reservations", json=hold, headers=key)
        assert second.status_code == 201, second.text
        assert "idempotent-replayed" not in second.headers
        assert second.json()["reservation_id"] != first["reservation_id"]
    with server.client() as admin:
        figures = admin.get(f"/v1/availability/{web}/{sku}").json()
        assert figures["available"] == 3


# --- issue 10 §5: list, delete, rotate ---------------------------------------------------------


def test_rotating_a_shops_token_refuses_the_old_one_at_once_on_every_worker(
    server: Server, unique: str
) -> None:
    """Story: rotation: issue `shop-2`, move the shop to it, delete `shop-1`.

    Invariant: from the DELETE's answer on, every worker process refuses shop-1 (8 warm
    connections over 2 workers, no wait); shop-2 never stops working; the list shows names,
    scopes, issue and last-use times, and neither a token nor its hash."""
    one, two = f"{unique}-shop-1", f"{unique}-shop-2"
    with server.client() as admin:
        old = created(issue(admin, one, ["availability:read"]))["token"]
    clients = [server.client(old) for _ in range(WORKER_CONNECTIONS)]
    try:
        for c in clients:
            assert c.get("/v1/locations").status_code == 200  # cached on its worker
        with server.client() as admin:
            new = created(issue(admin, two, ["availability:read"]))["token"]
            deadline = time.monotonic() + 20
            while listed(admin)[one]["last_used_at"] is None:  # recorded in the background
                assert time.monotonic() < deadline, "last use never recorded"
                time.sleep(0.1)
            tokens = listed(admin)
            assert tokens[two]["last_used_at"] is None
            for name in (one, two):
                assert tokens[name]["scopes"] == ["availability:read"]
                assert tokens[name]["created_at"] is not None
            text = admin.get("/v1/tokens").text
            for secret in (old, new):
                assert (
                    secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text
                )

            deleted = admin.delete(f"/v1/tokens/{one}")
            assert deleted.status_code == 200, deleted.text
            assert deleted.json()["name"] == one
        for c in clients:
            assert_problem(c.get("/v1/locations"), 401, "unauthorized")
        for _ in range(WORKER_CONNECTIONS):
            with server.client(new) as shop:
                assert shop.get("/v1/locations").status_code == 200
        with server.client() as admin:
            assert one not in listed(admin) and two in listed(admin)
            assert_problem(admin.delete(f"/v1/tokens/{one}"), 404)
            assert_problem(admin.delete("/v1/tokens/admin"), 409)
        with server.client(new) as shop:
            assert_problem(shop.get("/v1/tokens"), 403)
            assert_problem(shop.delete(f"/v1/tokens/{two}"), 403)
    finally:
        for c in clients:
            c.close()


# --- §6 and §5: unauthenticated clients cannot exhaust the service ----------------------------


def test_a_token_scanner_is_slowed_down_per_address(tmp_path: Path) -> None:
    """Story: a scanner tries random bearer tokens from one address while the shop's feed
    runs from the same address.

    Invariant: after the burst (5 at 1/s) every unknown token is a 429 problem with
    Retry-After, before any lookup; the feed's token, in use, keeps working; tokens that
    are not printable ASCII are 401 (never 503)."""
    env = embedded_env(tmp_path, ATP_UNKNOWN_TOKEN_RATE="1")
    with running_service(env) as server, server.client() as admin:
        feed = created(issue(admin, "feed", ["availability:read"]))["token"]
        with server.client(feed) as c:
            assert c.get("/v1/locations").status_code == 200
        statuses = []
        for i in range(8):
            with server.client(f"atp_guess{i}") as scanner:
                r = scanner.get("/v1/locations")
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert_problem(r, 429, "rate-limited")
                assert int(r.headers["retry-after"]) >= 1
            else:
                assert_problem(r, 401, "unauthorized")
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3, statuses
        with server.client(feed) as c:
            assert c.get("/v1/locations").status_code == 200


@pytest.mark.parametrize(
    "value",
    [b"Bearer \xff\xfe\xe9", b"Bearer t\xf6ken", b"Bearer " + "é".encode()],
)
def test_a_bearer_token_with_non_ascii_bytes_is_401(server: Server, value: bytes) -> None:
    """Invariant: a token that cannot be atp's is 401 unauthorized, never a 503."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get("/v1/locations", headers={"Authorization": value})  # type: ignore[dict-item]
        assert_problem(r, 401, "unauthorized")
        r = c.post(
            "/v1/tokens",
            json={"name": "x", "scopes": ["admin"]},
            headers={"Authorization": value, "Idempotency-Key": "k"},  # type: ignore[dict-item]
        )
        assert_problem(r, 401, "unauthorized")


def _raw(port: int, data: bytes, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_an_oversized_request_head_is_431(server: Server) -> None:
    """Invariant: request line + headers over 16 KiB, whole or trickled: 431 problem,
    connection closed; a head just under the cap is served."""
    port = int(server.url.rsplit(":", 1)[1])
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 32_000 + b"\r\n\r\n"
    answer = _raw(port, big)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), head
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 431
    fits = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: " + b"a" * 15_000
    assert _raw(port, fits + b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    # The same header trickled in 1 KiB pieces is refused before it is all read.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        sent = 0
        try:
            while sent < 1_000_000:
                sock.sendall(b"a" * 1024)
                sent += 1024
                time.sleep(0.001)
        except OSError:
            pass  # the server closed the connection
        assert sent < 1_000_000
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:  # closed with our unread bytes pending: a reset
            answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_a_slow_or_silent_client_is_cut_off(server: Server) -> None:
    """Story: slowloris: one client trickles a header byte a second, another connects and
    says nothing. Invariant: both connections are closed within the 10 s head deadline (plus
    slack), the trickler with a 408 problem."""
    port = int(server.url.rsplit(":", 1)[1])
    results: dict[str, tuple[float, bytes]] = {}

    def trickle() -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            received = b""
            try:
                for _ in range(25):
                    sock.sendall(b"a")
                    sock.settimeout(1.0)
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        continue
                    received += chunk
                    if not chunk:
                        break
            except OSError:
                pass
        results["trickle"] = (time.monotonic() - started, received)

    def silent() -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            received = sock.recv(65536)
        results["silent"] = (time.monotonic() - started, received)

    threads = [threading.Thread(target=trickle), threading.Thread(target=silent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took, received = results["trickle"]
    assert 9 <= took <= 14, took
    assert received.startswith(b"HTTP/1.1 408"), received
    took, received = results["silent"]
    assert 9 <= took <= 14 and received == b"", (took, received)


def _answers(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """Read `count` whole answers with Content-Length: (head, body) each."""
    buffer, answers = b"", []
    while len(answers) < count:
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        if sep:
            fields = dict(
                line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line
            )
            length = int(fields.get(b"content-length", b"0"))
            if len(rest) >= length:
                answers.append((head, rest[:length]))
                buffer = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, buffer
        buffer += chunk
    assert buffer == b""
    return answers


def test_answers_go_out_whole_on_one_keep_alive_connection(server: Server) -> None:
    """Story: a storefront keeps one connection open and sends a HEAD probe, a PUT that
    waits for `100 Continue` before its body, and two pipelined reads.

    Invariant: every answer arrives whole and in order (each head with its body, written
    together), the interim 100 comes before the body is sent, and HEAD gets its head (no body
    write follows it to carry it) at once."""
    port = int(server.url.rsplit(":", 1)[1])
    auth = f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(65536)  # GET routes answer HEAD 405: a head, no body
        assert head.startswith(b"HTTP/1.1 405") and head.endswith(b"\r\n\r\n"), head
        body = json.dumps({"name": "one write", "kind": "store"}).encode()
        sock.sendall(
            b"PUT /v1/locations/ONEWRITE HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        [(head, answer)] = _answers(sock, 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(answer)["code"] == "ONEWRITE"
        get = b"GET /v1/locations HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
        sock.sendall(get + get)
        for head, answer in _answers(sock, 2):
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b'"ONEWRITE"' in answer


def test_random_webhook_store_names_do_not_grow_memory(tmp_path: Path) -> None:
    """Story: a bot posts to /v1/webhooks/woocommerce/<random> (public, no token).
    Invariant: each answer is a 404 problem and the per-process cache of store lookups stays
    within its bound."""
    from litestar.testing import TestClient

    from api.bootstrap import bootstrap
    from api.http.app import create_app
    from api.settings import Settings

    settings = Settings(data_dir=str(tmp_path), admin_token=ADMIN_TOKEN, log_level="error")
    app = create_app(bootstrap(settings))
    with TestClient(app) as client:
        for i in range(1100):
            r = client.post(f"/v1/webhooks/woocommerce/bot{i}", content=b"{}")
            assert r.status_code == 404
        assert len(app.state.integrations) <= 1024


def test_a_header_with_control_bytes_is_a_400_problem(server: Server) -> None:
    """Invariant: a header value with a control byte is not HTTP (RFC 9110 §5.5): a 400
    problem from the server itself, never a 5xx."""
    port = int(server.url.rsplit(":", 1)[1])
    request = b"GET /v1/locations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\r\n\r\n"
    head, _, body = _raw(port, request).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/problem+json" in head, head
    assert json.loads(body)["status"] == 400
