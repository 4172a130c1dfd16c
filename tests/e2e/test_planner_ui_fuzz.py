"""The planner page's forms under generated input: whatever a browser (or anyone) posts,
the answer is a page, never a 5xx, and a refused form saves nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from api.bootstrap import bootstrap
from api.http.app import create_app
from api.service.demo import load_demo
from api.settings import Settings
from tests.support.server import ADMIN_TOKEN

pytestmark = pytest.mark.e2e

FIELDS = {
    "/ui/channels/web": ("locations", "buffer", "share_percent", "backorder_limit"),
    "/ui/locations/WH1": ("name", "kind", "active"),
    "/ui/safety-stock": ("sku", "location", "quantity"),
}
text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "5", "100", "WH1", "WH1, WH2", "store", "on", "", "-1", "1e3"]),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir: Path = tmp_path_factory.mktemp("ui-fuzz")
    settings = Settings(data_dir=str(data_dir), admin_token=ADMIN_TOKEN, log_level="critical")
    app = create_app(bootstrap(settings))
    with TestClient(app) as client:
        load_demo(app.state.service)
        page = client.get("/ui/sign-in")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        client.post("/ui/sign-in", data={"_csrf": csrf[1], "token": ADMIN_TOKEN})
        yield client


def _csrf(client: TestClient) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', client.get("/ui/channels").text)
    assert found is not None
    return found[1]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    page=st.sampled_from(sorted(FIELDS)),
    preview=st.booleans(),
    values=st.dictionaries(
        st.sampled_from(
            [
                "locations",
                "buffer",
                "share_percent",
                "backorder_limit",
                "name",
                "kind",
                "active",
                "sku",
                "location",
                "quantity",
                "cursor",
                "other",
            ]
        ),
        text,
        max_size=6,
    ),
)
def test_no_form_answers_a_5xx(
    client: TestClient,
    page: str,
    preview: bool,
    values: dict[str, str],
) -> None:
    """Invariant: a generated form post (missing, unknown or malformed fields, a bad
    cursor) answers a page below 500; one refused (4xx) changes no policy."""
    before = client.get("/v1/channels", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    action = f"{page}/preview" if preview else page
    answer = client.post(action, data={**values, "_csrf": _csrf(client)})
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        after = client.get("/v1/channels", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert after.json() == before.json()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        [
            "/ui/stock",
            "/ui/safety-stock",
            "/ui/items/MUG-01",
            "/ui/channels",
            "/ui/items",
            "/ui/new",
            "/ui/sign-in",
        ]
    ),
    query=st.dictionaries(
        st.sampled_from(
            [
                "channel",
                "status",
                "cursor",
                "after",
                "changes",
                "sku",
                "kind",
                "code",
                "next",
                "saved",
            ]
        ),
        text,
        max_size=4,
    ),
)
def test_no_page_answers_a_5xx(client: TestClient, path: str, query: dict[str, str]) -> None:
    """Invariant: any query on any page answers below 500 (a bad one: a 4xx page naming
    it, or a redirect)."""
    answer = client.get(path, params=query, follow_redirects=False)
    assert answer.status_code < 500, answer.text
