"""The planner page (/ui) in a real browser: Playwright driving Debian's Chromium, headless,
against a real `atp serve` (embedded, demo catalogue). Every wait is on page state (a URL,
an element), never a sleep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from api.service.demo import demo_skus
from tests.support.server import ADMIN_TOKEN, Server
from tests.support.ui import launch, planner_service, sign_in

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service() -> Iterator[Server]:
    with planner_service() as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    context.set_default_timeout(30_000)  # waits end on page state; this bounds a hang
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def api(service: Server, token: str = ADMIN_TOKEN) -> httpx.Client:
    return service.client(token)


def issue(service: Server, name: str, scopes: list[str]) -> str:
    with api(service) as c:
        r = c.post("/v1/tokens", json={"name": name, "scopes": scopes})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token


def web_figures(c: httpx.Client, position: int = 0) -> dict[str, int]:
    """The web channel's figure of every demo SKU, as the availability route answers it."""
    skus = demo_skus()
    params: list[tuple[str, str | int]] = [("sku", s) for s in skus]
    if position:
        params.append(("min_position", position))
    r = c.get("/v1/availability/web", params=params)
    assert r.status_code == 200, r.text
    return {i["sku"]: i["available"] for i in r.json()["items"]}


def web_channel(c: httpx.Client) -> dict[str, object]:
    channels = {ch["code"]: ch for ch in c.get("/v1/channels").json()}
    web: dict[str, object] = channels["web"]
    return web


def cells(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def test_a_planner_raises_the_web_buffer_reads_the_preview_and_saves(
    service: Server, page: Page
) -> None:
    """Story: a planner signs in, raises the web channel's buffer by 3, reads the preview
    (which SKUs drop and by how much, the web's totals), saves, and the storefront's
    availability route answers the new figures. Invariant: the preview is what the save
    does: every figure it shows before is the figure served before, every figure it shows
    after is the figure served after the save, its totals are the sums of those figures,
    and the drops come largest first."""
    with api(service) as c:
        before = web_figures(c)
        buffer = int(web_channel(c)["buffer"])  # type: ignore[call-overload]
    sign_in(page, service.url, ADMIN_TOKEN)
    page.click("tr[data-channel=web] >> text=Edit")
    page.wait_for_url(f"{service.url}/ui/channels/web")
    assert page.input_value("input[name=buffer]") == str(buffer)

    page.fill("input[name=buffer]", str(buffer + 3))
    page.click("#preview-button")
    page.wait_for_selector("#preview-result")

    assert page.url == f"{service.url}/ui/channels/web"  # htmx swapped the region only
    web_totals = "#totals tr[data-channel=web]"
    assert page.inner_text(f"{web_totals} [data-before=available]") == str(sum(before.values()))
    rows = page.locator("#changes tbody tr[data-sku]")
    shown = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        assert row.get_attribute("data-channel") == "web"
        sku, _, was, now, *_ = [t.strip() for t in row.locator("td").all_inner_texts()]
        shown[sku] = (int(was), int(now))
    assert int(page.inner_text("#changed")) == len(shown) > 0
    assert all(before[sku] == was for sku, (was, _) in shown.items())
    drops = [was - now for was, now in shown.values()]
    assert drops == sorted(drops, reverse=True)
    assert all(0 < drop <= 3 for drop in drops)
    with api(service) as c:
        assert web_figures(c) == before  # a preview writes nothing

    page.click("#save-button")
    page.wait_for_url(re.compile(r".*/ui/channels/web\?saved=\d+$"))
    position = int(page.get_attribute("#saved", "data-position") or 0)
    assert page.input_value("input[name=buffer]") == str(buffer + 3)

    with api(service) as c:
        after = web_figures(c, position)
        assert web_channel(c)["buffer"] == buffer + 3
    assert {sku: (before[sku], after[sku]) for sku in shown} == shown
    assert all(after[sku] == before[sku] for sku in before if sku not in shown)
    assert page.locator("#saved").is_visible()

    page.goto(f"{service.url}/ui/channels")
    latest = page.locator("#policy-changes tbody tr").first
    assert "admin" in latest.inner_text() and f"buffer {buffer + 3}" in latest.inner_text()


def test_a_read_only_token_sees_every_page_but_cannot_preview_or_save(
    service: Server, page: Page, context: BrowserContext
) -> None:
    """Story: an analyst signs in with an `availability:read` token. Invariant: every page
    shows, the preview button is disabled and says why, and a save posted anyway (with the
    session's own CSRF token) answers 403 and changes nothing."""
    token = issue(service, "analyst", ["availability:read"])
    sign_in(page, service.url, token, "/ui/channels/web")
    assert page.is_disabled("#preview-button")
    assert "lacks policy:write" in page.inner_text("#read-only")
    assert "read only" in page.inner_text("#who")
    csrf = page.get_attribute("input[name=_csrf]", "value") or ""
    with api(service) as c:
        was = web_channel(c)
    form = {
        "_csrf": csrf,
        "locations": "WH1",
        "buffer": "999",
        "share_percent": "100",
        "backorder_limit": "0",
        "low_stock_threshold": "5",
    }
    for action in ("/ui/channels/web", "/ui/channels/web/preview"):
        answer = context.request.post(f"{service.url}{action}", form=form, max_redirects=0)
        assert answer.status == 403
        assert "policy:write" in answer.text()
    with api(service) as c:
        assert web_channel(c) == was
    for path, selector in [
        ("/ui/channels", "#channels"),
        ("/ui/safety-stock", "#rules"),
        ("/ui/stock?channel=pos&status=low_stock", "#stock-list"),
        ("/ui/items/TEE-BLK-M", "#item-locations"),
        ("/ui/operations", "#projector"),
    ]:
        page.goto(f"{service.url}{path}")
        assert page.locator(selector).is_visible(), path
    assert token not in page.content()


def test_a_signed_out_visitor_is_sent_to_sign_in_and_back(service: Server, page: Page) -> None:
    """Story: a planner opens a bookmarked item page without a session. Invariant: every
    page sends a visitor without a session to sign in, a wrong token is refused without
    being echoed, and signing in returns to the page asked for, which shows the figures
    `GET /v1/items/{sku}` answers; signing out ends the session."""
    url = service.url
    for path in ("/ui/channels", "/ui/operations", "/ui/items/MUG-01", "/ui"):
        page.goto(f"{url}{path}")
        page.wait_for_url(f"{url}/ui/sign-in**")
    page.goto(f"{url}/ui/items/MUG-01")
    page.wait_for_url(f"{url}/ui/sign-in?next=/ui/items/MUG-01")
    page.fill("input[name=token]", "not-a-token-xyz")
    page.click("button[type=submit]")
    page.wait_for_selector("#error")
    assert "unknown token" in page.inner_text("#error")
    assert "not-a-token-xyz" not in page.content()
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/ui/items/MUG-01")
    with api(service) as c:
        document = c.get("/v1/items/MUG-01").json()
    for figure in document["channels"]:
        row = page.locator(f"#item-channels tr[data-channel={figure['channel']}] td")
        assert int(row.nth(1).inner_text()) == figure["available"]
    for stock in document["locations"]:
        row = page.locator(f"#item-locations tr[data-location={stock['location']}] td")
        assert int(row.nth(1).inner_text()) == stock["on_hand"]
        assert int(row.nth(6).inner_text()) == stock["sellable"]
    assert page.locator("#history tbody tr").count() >= 1
    assert ADMIN_TOKEN not in page.content()
    page.click("text=Sign out")
    page.wait_for_url(f"{url}/ui/sign-in")
    page.goto(f"{url}/ui/channels")
    page.wait_for_url(f"{url}/ui/sign-in**")


def test_the_session_cookie_is_sealed_httponly_and_strict(
    service: Server, page: Page, context: BrowserContext
) -> None:
    """Invariant: the session lives in an HttpOnly, SameSite=Strict cookie scripts cannot
    read, which holds the token only sealed (never in clear); pages may not be framed or
    cached."""
    sign_in(page, service.url, ADMIN_TOKEN)
    (cookie,) = [c for c in context.cookies() if c["name"] == "atp_ui"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert ADMIN_TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""
    answer = page.goto(f"{service.url}/ui/channels")
    assert answer is not None
    headers = answer.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


def test_a_form_without_its_csrf_token_is_refused_and_saves_nothing(
    service: Server, page: Page, context: BrowserContext, browser: Browser
) -> None:
    """Story: a page on another site makes a signed-in planner's browser post to the
    planner page. Invariant: a POST without the session's CSRF token, or with another
    session's, is 403 and saves nothing; a cross-site form post carries no session
    (SameSite=Strict), so it is sent to sign in and saves nothing either."""
    sign_in(page, service.url, ADMIN_TOKEN)
    with api(service) as c:
        was = web_channel(c)
    form = {
        "locations": "ST1",
        "buffer": "500",
        "share_percent": "10",
        "backorder_limit": "0",
        "low_stock_threshold": "5",
    }
    other = browser.new_context()
    other_page = other.new_page()
    other_page.goto(f"{service.url}/ui/sign-in")
    other_csrf = other_page.get_attribute("input[name=_csrf]", "value") or ""
    other.close()
    for sent in (form, {**form, "_csrf": ""}, {**form, "_csrf": other_csrf}):
        answer = context.request.post(f"{service.url}/ui/channels/web", form=sent, max_redirects=0)
        assert answer.status == 403, sent
        assert "CSRF" in answer.text()

    # A page on another site whose form posts to the planner page.
    inputs = "".join(f'<input name="{k}" value="{v}">' for k, v in form.items())
    evil = (
        f'<form method="post" action="{service.url}/ui/channels/web">{inputs}'
        '<button id="go">win a prize</button></form>'
    )
    page.route(
        "http://attacker.test/**",
        lambda route: route.fulfill(body=evil, content_type="text/html"),
    )
    page.goto("http://attacker.test/prize")
    page.click("#go")
    # The browser sent no session with it: the visitor is sent to sign in.
    page.wait_for_url(f"{service.url}/ui/sign-in?next=/ui/channels/web")
    with api(service) as c:
        assert web_channel(c) == was


def test_a_bad_field_re_renders_the_form_naming_it_and_saves_nothing(
    service: Server, page: Page, context: BrowserContext
) -> None:
    """Invariant: a form is read as strictly as the JSON routes read a body: a buffer of
    `1.5` or `"-1"`, a share of 101, an unknown field each re-render the form naming the
    field (422), in the preview and on save, and nothing is saved."""
    sign_in(page, service.url, ADMIN_TOKEN, "/ui/channels/web")
    page.fill("input[name=buffer]", "1.5")
    page.click("#preview-button")
    page.wait_for_selector("#buffer-error")
    assert "buffer" in page.inner_text("#buffer-error")
    assert page.locator("#preview-result").count() == 0
    csrf = page.get_attribute("input[name=_csrf]", "value") or ""
    with api(service) as c:
        was = web_channel(c)
    good = {
        "_csrf": csrf,
        "locations": "WH1, WH2",
        "buffer": "1",
        "share_percent": "100",
        "backorder_limit": "0",
        "low_stock_threshold": "5",
    }
    for field, value in [
        ("buffer", "-1"),
        ("buffer", "1e3"),
        ("share_percent", "101"),
        ("locations", "WH1, bad code!"),
        ("extra", "1"),
    ]:
        answer = context.request.post(
            f"{service.url}/ui/channels/web", form={**good, field: value}, max_redirects=0
        )
        assert answer.status == 422, (field, value)
        assert f"{field}:" in answer.text(), (field, value)
    with api(service) as c:
        assert web_channel(c) == was


def test_the_low_stock_list_pages_by_cursor_without_gaps(service: Server, page: Page) -> None:
    """Story: a planner reads the pos channel's low-stock report. Invariant: it lists
    exactly the SKUs the availability route calls low_stock, each once, page after page."""
    with api(service) as c:
        r = c.get("/v1/availability/pos", params=[("sku", s) for s in demo_skus()])
        low = sorted(i["sku"] for i in r.json()["items"] if i["status"] == "low_stock")
    assert low
    sign_in(page, service.url, ADMIN_TOKEN, "/ui/stock?channel=pos&status=low_stock&limit=4")
    listed = []
    pages = 0
    while True:
        pages += 1
        listed += [
            row.get_attribute("data-sku") for row in page.locator("#stock-list tr[data-sku]").all()
        ]
        if page.locator("#next-page").count() == 0:
            break
        page.click("#next-page")
        page.wait_for_load_state()
    assert listed == low
    assert pages == -(-len(low) // 4)  # ceil: 4 a page


def test_a_planner_sets_a_safety_stock_rule_after_its_preview(service: Server, page: Page) -> None:
    """Story: a planner keeps 5 mugs back at the central warehouse. Invariant: the preview
    lists the SKU on every channel sourcing from WH1 with the figure the availability
    route answers once saved, and the rule list then shows the rule."""
    sku = "MUG-07"
    sign_in(page, service.url, ADMIN_TOKEN, "/ui/safety-stock")
    page.fill("input[name=sku]", sku)
    page.fill("input[name=location]", "WH1")
    page.fill("input[name=quantity]", "5")
    page.click("#preview-button")
    page.wait_for_selector("#preview-result")
    rows = page.locator("#changes tbody tr[data-sku]")
    after = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        assert row.get_attribute("data-sku") == sku
        after[row.get_attribute("data-channel")] = int(row.locator("td").nth(3).inner_text())
    with api(service) as c:
        sourcing = {ch["code"] for ch in c.get("/v1/channels").json() if "WH1" in ch["locations"]}
    assert set(after) == sourcing
    page.click("#save-button")
    page.wait_for_url(re.compile(r".*/ui/safety-stock\?saved=\d+$"))
    position = int(page.get_attribute("#saved", "data-position") or 0)
    with api(service) as c:
        for channel, figure in after.items():
            r = c.get(f"/v1/availability/{channel}/{sku}", params={"min_position": position})
            assert r.json()["available"] == figure
    assert f"{sku} WH1 5" in " ".join(page.locator("#rules").inner_text().split())


def test_a_planner_renames_a_location_and_the_preview_says_nothing_changes(
    service: Server, page: Page
) -> None:
    """Story: a planner renames the east warehouse. Invariant: a change that moves no figure
    previews as no change, and once saved the location list says the new name."""
    sign_in(page, service.url, ADMIN_TOKEN, "/ui/locations/WH2")
    page.fill("input[name=name]", "East fulfilment centre (Leipzig)")
    page.click("#preview-button")
    page.wait_for_selector("#preview-result")
    assert page.inner_text("#changed") == "0"
    page.click("#save-button")
    page.wait_for_url(re.compile(r".*/ui/locations/WH2\?saved=\d+$"))
    with api(service) as c:
        names = {loc["code"]: loc["name"] for loc in c.get("/v1/locations").json()}
    assert names["WH2"] == "East fulfilment centre (Leipzig)"


@contextmanager
def signed_in_client(server: Server, token: str = ADMIN_TOKEN) -> Iterator[httpx.Client]:
    """An HTTP client holding a signed-in session (cookies kept, as a browser does)."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        page = browser.get("/ui/sign-in")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        signed = browser.post("/ui/sign-in", data={"_csrf": csrf[1], "token": token})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/channels"
        yield browser


def test_a_session_holds_on_every_worker_of_the_service(server: Server) -> None:
    """Invariant: the sealed session opens in every API worker process (the service on
    PostgreSQL with two workers): each page answers 200, never the sign-in page."""
    with signed_in_client(server) as browser:
        for _ in range(20):
            answer = browser.get("/ui/channels")
            assert answer.status_code == 200 and 'id="channels"' in answer.text


def test_an_htmx_request_without_a_session_is_sent_to_sign_in(server: Server) -> None:
    """Invariant: a preview posted by htmx after the session is gone answers 204 with
    HX-Redirect to the sign-in page (htmx then loads it), never a page swapped in."""
    answer = httpx.post(
        f"{server.url}/ui/channels/web/preview", headers={"HX-Request": "true"}, timeout=30
    )
    assert answer.status_code == 204
    assert answer.headers["hx-redirect"] == "/ui/sign-in?next=/ui/channels/web"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/ui/items/MUG-01?after=1e3", "after"),
        ("/ui/items/MUG-01?after=-1", "after"),
        ("/ui/stock?channel=web&status=sold_out", "status"),
        ("/ui/stock?channel=web&status=low_stock&cursor=bogus", "cursor"),
        ("/ui/stock?channel=no%20such", "channel"),
        ("/ui/stock?channel=web&limit=0", "limit"),
        ("/ui/stock?channel=web&limit=1.5", "limit"),
        ("/ui/safety-stock?cursor=bogus", "cursor"),
    ],
)
def test_bad_query_input_answers_a_page_naming_it(server: Server, path: str, named: str) -> None:
    """Invariant: a page asked with a bad query parameter answers a 4xx HTML page that
    names it (never a 5xx, never a JSON problem in the browser)."""
    with signed_in_client(server) as browser:
        answer = browser.get(path)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert named in answer.text


def test_deleting_a_token_ends_its_sessions(service: Server) -> None:
    """Story: a planner leaves; the admin deletes their token. Invariant: the session the
    token opened is sent to sign in from the deletion's answer on, though its cookie is
    still sealed and unexpired."""
    token = issue(service, "leaver", ["policy:write"])
    with signed_in_client(service, token) as browser:
        assert browser.get("/ui/channels").status_code == 200
        with api(service) as c:
            assert c.delete("/v1/tokens/leaver").status_code == 200
        answer = browser.get("/ui/channels")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in?next=/ui/channels"


STORE = {"name": "Sign-out test store", "kind": "store", "active": False}
"""An inactive location the stories below own (it adds nothing to any channel's figures)."""


def _csrf_of(html: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert found is not None
    return found[1]


@pytest.mark.parametrize("backend", ["server", "service"])
def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Story: a planner on the shared store PC signs out; someone had copied the session
    cookie before. Invariant: from the sign-out's answer on, the old cookie opens no page
    and saves nothing, in every worker process (`server`: two on PostgreSQL; `service`:
    embedded, SQLite): each request is sent to sign in, and no channel changes."""
    server: Server = request.getfixturevalue(backend)
    policy = {"locations": ["UIST"], "buffer": 0, "share_percent": 100, "backorder_limit": 0}
    with api(server) as c:
        c.put("/v1/locations/UIST", json=STORE).raise_for_status()
        c.put("/v1/channels/uiso", json=policy).raise_for_status()
        before = c.get("/v1/channels").json()
    with signed_in_client(server) as browser:
        page = browser.get("/ui/channels/uiso")
        assert page.status_code == 200
        old_csrf = _csrf_of(page.text)
        copied = dict(browser.cookies)
        signed_out = browser.post("/ui/sign-out", data={"_csrf": old_csrf})
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/ui/sign-in"
    form = {"_csrf": old_csrf, "locations": "UIST", "buffer": "7", "share_percent": "100"}
    form |= {"backorder_limit": "0", "low_stock_threshold": "0"}
    with httpx.Client(base_url=server.url, cookies=copied, timeout=30) as thief:
        for _ in range(10):  # spread over both workers
            answer = thief.get("/ui/channels")
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"] == "/ui/sign-in?next=/ui/channels"
            saved = thief.post("/ui/channels/uiso", data=form)
            assert saved.status_code == 303
            assert saved.headers["location"].startswith("/ui/sign-in")
    with api(server) as c:
        assert c.get("/v1/channels").json() == before


@pytest.mark.parametrize(
    "target",
    [
        "/ui/../v1/tokens",
        "/ui/./../v1/tokens",
        "/ui/%2e%2e/v1/tokens",
        "/ui/%2E%2E/metrics",
        "/ui/.%2e/v1/tokens",
        "/ui/channels/../../v1/tokens",
        "/ui/channels?x=/../../v1",
    ],
)
def test_sign_in_only_sends_the_planner_to_a_page_of_the_planner(
    server: Server, target: str
) -> None:
    """Story: a link `…/ui/sign-in?next=/ui/../v1/tokens` is sent to a planner. Invariant:
    after signing in the browser stays under /ui (a dot segment, plain or percent-encoded,
    sends it to the channels page); a query holding dots is no path and is kept."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        csrf = _csrf_of(browser.get("/ui/sign-in").text)
        signed = browser.post(
            "/ui/sign-in", data={"_csrf": csrf, "token": ADMIN_TOKEN, "next": target}
        )
    assert signed.status_code == 303
    expected = target if "?" in target else "/ui/channels"
    assert signed.headers["location"] == expected


@pytest.mark.parametrize(
    "path", ["/ui/nope", "/ui/static/x/../../nope", "/ui/channels/web/extra", "/uix"]
)
def test_an_unknown_page_under_ui_answers_the_html_error_page(server: Server, path: str) -> None:
    """Story: a planner follows a stale bookmark under /ui. Invariant: a page of /ui that
    does not exist answers 404 as an HTML page (the planner's browser never shows a JSON
    problem); a path outside /ui keeps the JSON problem. (A client resolves dot segments
    before sending: `/ui/static/../../x` is asked as `/x`, outside /ui.)"""
    with signed_in_client(server) as browser:
        answer = browser.get(path)
    assert answer.status_code == 404
    kind = answer.headers["content-type"]
    if path.startswith("/ui/"):
        assert kind.startswith("text/html") and "Not found" in answer.text
    else:
        assert kind.startswith("application/problem+json")


def test_number_fields_ask_a_tablet_for_its_numeric_keypad(server: Server) -> None:
    """Invariant: the channel and safety-stock forms' number fields carry a plain
    `inputmode="numeric"` attribute (never an escaped one a tablet ignores)."""
    with signed_in_client(server) as browser:
        channel = browser.get("/ui/channels/web").text
        safety = browser.get("/ui/safety-stock").text
    assert re.search(r'name="buffer" value="\d+" inputmode="numeric"', channel)
    assert re.search(r'name="quantity" value="0" inputmode="numeric"', safety)
    assert "&#34;" not in channel and "&#34;" not in safety


@pytest.mark.parametrize(
    ("form", "named"),
    [
        ({"sku": "", "location": "", "quantity": "1"}, "sku and location left empty"),
        ({"sku": "{u}", "location": "", "quantity": "1"}, "location left empty"),
        ({"sku": "", "location": "WH1", "quantity": "1"}, "sku left empty"),
        ({"sku": "{u}", "all_skus": "on", "location": "WH1", "quantity": "1"}, "not both"),
        ({"sku": "{u}", "location": "WH1", "all_locations": "yes", "quantity": "1"}, "checkbox"),
    ],
)
@pytest.mark.parametrize("action", ["/ui/safety-stock", "/ui/safety-stock/preview"])
def test_a_half_filled_safety_stock_form_saves_no_rule(
    server: Server, unique: str, action: str, form: dict[str, str], named: str
) -> None:
    """Story: a planner submits the safety-stock form with the SKU and location still
    empty. Invariant: no rule is saved or previewed unless the planner ticked "every SKU" /
    "every location": the answer is 422 naming the empty fields, and the rules are
    unchanged."""
    before = _rules_at_head(server)
    with signed_in_client(server) as browser:
        csrf = _csrf_of(browser.get("/ui/safety-stock").text)
        sent = {k: v.replace("{u}", unique) for k, v in form.items()}
        answer = browser.post(action, data={**sent, "_csrf": csrf})
    assert answer.status_code == 422, answer.text
    assert named in answer.text
    assert 'id="preview-result"' not in answer.text
    assert _rules_at_head(server) == before


def _rules_at_head(server: Server) -> list[dict[str, object]]:
    """The safety-stock rules as of the ledger's head (either worker may answer, and its
    read model may still lag behind an earlier test's write)."""
    with api(server) as c:
        head = c.get("/ready").json()["checks"]["ledger"]["head"]
        items: list[dict[str, object]] = c.get(
            "/v1/safety-stock", params={"min_position": head}
        ).json()["items"]
        return items


def test_a_planner_ticks_every_sku_to_keep_stock_back_at_a_location(server: Server) -> None:
    """Story: a planner keeps 1 unit of every SKU back at the flagship store, ticking "every
    SKU". Invariant: with the box ticked the form saves the location-wide rule (the PUT's
    null SKU), which the rule list then holds; removing it (0) leaves no rule. The list is
    read as of the position the page says it saved (`?saved=`): the other worker's read
    model may not have caught up yet (read-your-writes across workers, as a client does)."""
    with api(server) as c:
        c.put("/v1/locations/UIST", json=STORE).raise_for_status()

    def rules_after(answer: httpx.Response) -> list[dict[str, object]]:
        position = int(answer.headers["location"].rsplit("saved=", 1)[1])
        with api(server) as c:
            got = c.get("/v1/safety-stock", params={"min_position": position})
            items: list[dict[str, object]] = got.json()["items"]
            return items

    with signed_in_client(server) as browser:
        csrf = _csrf_of(browser.get("/ui/safety-stock").text)
        form = {"_csrf": csrf, "sku": "", "all_skus": "on", "location": "UIST", "quantity": "1"}
        saved = browser.post("/ui/safety-stock", data=form)
        assert saved.status_code == 303, saved.text
        assert {"sku": None, "location": "UIST", "quantity": 1} in rules_after(saved)
        removed = browser.post("/ui/safety-stock", data={**form, "quantity": "0"})
        assert removed.status_code == 303, removed.text
    assert all(r["location"] != "UIST" for r in rules_after(removed))


def test_a_planner_opens_a_new_channel_after_previewing_it(service: Server, page: Page) -> None:
    """Story: a planner opens an outlet channel selling half of the east warehouse. Invariant:
    the preview shows the new channel with no figures before and the totals it will have
    after, and once saved the availability route answers the figures the preview listed."""
    sign_in(page, service.url, ADMIN_TOKEN)
    page.fill("input[name=code] >> nth=0", "outlet")
    page.click("#new-channel")
    page.wait_for_url(f"{service.url}/ui/channels/outlet")
    page.fill("input[name=locations]", "WH2")
    page.fill("input[name=share_percent]", "50")
    page.fill("input[name=buffer]", "0")
    page.fill("input[name=backorder_limit]", "0")
    page.click("#preview-button")
    page.wait_for_selector("#preview-result")
    row = "#totals tr[data-channel=outlet]"
    assert page.inner_text(f"{row} [data-before=available]") == "\u2013"  # no figure yet
    total = int(page.inner_text(f"{row} [data-after=available]"))
    rows = page.locator("#changes tbody tr[data-sku]")
    shown = {}
    for i in range(rows.count()):
        cells = [t.strip() for t in rows.nth(i).locator("td").all_inner_texts()]
        shown[cells[0]] = int(cells[3])
    page.click("#save-button")
    page.wait_for_url(re.compile(r".*/ui/channels/outlet\?saved=\d+$"))
    position = int(page.get_attribute("#saved", "data-position") or 0)
    with api(service) as c:
        params: list[tuple[str, str | int]] = [("sku", s) for s in demo_skus()]
        r = c.get("/v1/availability/outlet", params=[*params, ("min_position", position)])
        figures = {i["sku"]: i["available"] for i in r.json()["items"]}
    assert sum(figures.values()) == total
    assert {sku: figures[sku] for sku in shown} == shown
    assert all(figures[sku] == 0 for sku in figures if sku not in shown)
    page.goto(f"{service.url}/ui/new?kind=channel&code=bad%20code")
    assert "code" in page.inner_text("#error")


@pytest.mark.parametrize(
    ("action", "form", "named"),
    [
        ("/ui/locations/{u}", {"name": "X", "kind": "shop", "active": "on"}, "kind"),
        ("/ui/locations/{u}", {"name": "X", "kind": "store", "active": "yes"}, "active"),
        ("/ui/locations/{u}/preview", {"name": "X" * 1001, "kind": "store"}, "name"),
        ("/ui/locations/bad%20code", {"name": "X", "kind": "store"}, "code"),
        ("/ui/safety-stock", {"sku": "{u}", "location": "", "quantity": "1.0"}, "quantity"),
        ("/ui/safety-stock", {"sku": "a b", "location": "", "quantity": "1"}, "sku"),
        ("/ui/safety-stock/preview", {"sku": "{u}", "location": "", "quantity": "x"}, "quantity"),
    ],
)
def test_a_bad_location_or_safety_stock_field_saves_nothing(
    server: Server, unique: str, action: str, form: dict[str, str], named: str
) -> None:
    """Invariant: the location and safety-stock forms are as strict as their PUTs: a bad
    field answers 422 naming it, and no location or rule appears."""
    with signed_in_client(server) as browser:
        page = browser.get("/ui/safety-stock")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        sent = {k: v.replace("{u}", unique) for k, v in form.items()}
        answer = browser.post(action.replace("{u}", unique), data={**sent, "_csrf": csrf[1]})
    assert answer.status_code == 422, answer.text
    assert f"{named}:" in answer.text or f"{named} " in answer.text
    with api(server) as c:
        assert unique not in c.get("/v1/locations").text
        assert unique not in c.get("/v1/safety-stock").text


def test_a_planner_weighs_closing_the_store_without_saving(service: Server, page: Page) -> None:
    """Story: a planner considers taking the flagship store out of every pool (unticks
    Active) and reads the preview, then leaves without saving. Invariant: the preview shows
    the channels the store serves moving (pos, selling only from it, to nothing) and
    nothing changes, since nothing was saved."""
    with api(service) as c:
        before = c.get("/v1/locations").json()
        pos = c.get("/v1/availability/pos", params=[("sku", s) for s in demo_skus()]).json()
    sign_in(page, service.url, ADMIN_TOKEN, "/ui/locations/ST1")
    page.uncheck("input[name=active]")
    page.click("#preview-button")
    page.wait_for_selector("#preview-result")
    row = "#totals tr[data-channel=pos]"
    assert int(page.inner_text(f"{row} [data-before=available]")) == sum(
        i["available"] for i in pos["items"]
    )
    assert page.inner_text(f"{row} [data-after=available]") == "0"
    assert not page.is_checked("input[name=active]")  # the form shows what was previewed
    with api(service) as c:
        assert c.get("/v1/locations").json() == before


def test_the_preview_pages_through_every_changed_sku_largest_drop_first(
    service: Server, page: Page
) -> None:
    """Story: a planner weighs closing the central warehouse, which feeds two channels.
    Invariant: paging through the preview shows every changed figure once (as many rows
    as the count it announces), the drops never growing from one row or page to the next,
    and the form still holds what is previewed."""
    sign_in(page, service.url, ADMIN_TOKEN, "/ui/locations/WH1")
    page.uncheck("input[name=active]")
    page.click("#preview-button")
    page.wait_for_selector("#preview-result")
    changed = int(page.inner_text("#changed"))
    assert changed > 50  # more than one page of 50
    seen: list[tuple[str, str]] = []
    drops: list[int] = []
    while True:
        rows = page.locator("#changes tbody tr[data-sku]")
        for i in range(rows.count()):
            row = rows.nth(i)
            seen.append(
                (row.get_attribute("data-sku") or "", row.get_attribute("data-channel") or "")
            )
            cells = [t.strip() for t in row.locator("td").all_inner_texts()]
            drops.append(int(cells[2]) - int(cells[3]))
        if page.locator("#more-changes").count() == 0:
            break
        first = seen[-rows.count()]
        page.click("#more-changes")
        page.wait_for_function(
            "([sku, channel]) => !document.querySelector("
            "`#changes tr[data-sku='${sku}'][data-channel='${channel}']`)",
            arg=list(first),
        )
    assert len(seen) == len(set(seen)) == changed
    assert drops == sorted(drops, reverse=True)
    assert not page.is_checked("input[name=active]")
