"""The planner page at /ui: Jinja templates rendered by Litestar's template engine, htmx
(npm `htmx.org` 2.0.11, 0BSD licence alongside) and a small stylesheet served from
`api/http/ui/static` (nothing fetched at run time, so the page works offline)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import StrictUndefined
from litestar import Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.http.ui import access, policies, views
from api.http.ui.access import policy_text

HERE = Path(__file__).parent
HTMX_VERSION = "2.0.11"


def _configure(engine: JinjaTemplateEngine) -> None:
    # A misspelt name in a template fails loudly (tests catch it) instead of rendering "".
    engine.engine.undefined = StrictUndefined
    engine.engine.filters["policy"] = policy_text


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's template engine: Jinja over api/http/ui/templates, autoescaping on."""
    return TemplateConfig(
        directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_configure
    )


def router() -> Router:
    """Every /ui route (pages, forms, static assets), kept out of the OpenAPI document:
    they answer HTML to a browser, not JSON to a client."""
    static = create_static_files_router(
        path="/static", directories=[HERE / "static"], include_in_schema=False
    )
    return Router(
        path="/ui",
        route_handlers=[*access.ROUTES, *policies.ROUTES, *views.ROUTES, static],
        exception_handlers=access.EXCEPTION_HANDLERS,
        include_in_schema=False,
    )
