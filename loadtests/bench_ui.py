"""What the planner page costs over the JSON routes it stands beside: the preview of the web
channel's buffer change as HTML (`POST /ui/channels/web/preview`, the page with 50 changed
SKUs rendered by Jinja) against `POST /v1/policies/preview` (JSON), and the channels page
against `GET /v1/channels`, side by side in one process on the embedded service with the
demo catalogue (50 SKUs, 3 channels).

    python -m loadtests.bench_ui [--repeat 200]

Requests alternate (JSON, page, JSON, page, ...) so that the machine's load falls on both
alike; prints per request the wall time (median) and this process's CPU time (mean, client
and server together: both run here), and the page / JSON ratios.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable

from litestar.testing import TestClient

from api.bootstrap import bootstrap
from api.http.app import create_app
from api.service.demo import load_demo
from api.settings import Settings

TOKEN = "bench-admin-token"
CHANNEL = {
    "locations": ["WH1", "WH2", "ST1"],
    "buffer": 5,
    "share_percent": 100,
    "backorder_limit": 10,
    "low_stock_threshold": 5,
}


def measure(call: Callable[[], int], repeat: int) -> tuple[list[float], list[float]]:
    """Run `call` (answers a status, which must be 200) `repeat` times: wall and CPU
    seconds of each run."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        assert call() == 200
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=data_dir, admin_token=TOKEN, log_level="error")
        app = create_app(bootstrap(settings))
        with TestClient(app) as client:
            load_demo(app.state.service)
            page = client.get("/ui/sign-in")
            csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            client.post("/ui/sign-in", data={"_csrf": csrf[1], "token": TOKEN})
            csrf = re.search(r'name="_csrf" value="([^"]+)"', client.get("/ui/channels").text)
            assert csrf is not None
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            form = {k: ", ".join(v) if isinstance(v, list) else str(v) for k, v in CHANNEL.items()}
            pairs: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {
                "preview (web buffer 2 -> 5)": (
                    lambda: (
                        client.post(
                            "/v1/policies/preview",
                            json={"channels": {"web": CHANNEL}},
                            headers=bearer,
                        ).status_code
                    ),
                    lambda: (
                        client.post(
                            "/ui/channels/web/preview",
                            data={**form, "_csrf": csrf[1]},
                            headers={"HX-Request": "true"},
                        ).status_code
                    ),
                ),
                "channels list": (
                    lambda: client.get("/v1/channels", headers=bearer).status_code,
                    lambda: client.get("/ui/channels").status_code,
                ),
            }
            print(f"{'':34}{'JSON':>22}{'page':>22}{'page/JSON':>12}")
            print(f"{'':34}{'wall ms':>11}{'CPU ms':>11}{'wall ms':>11}{'CPU ms':>11}")
            for name, (json_call, page_call) in pairs.items():
                results: dict[str, tuple[list[float], list[float]]] = {
                    "json": ([], []),
                    "page": ([], []),
                }
                for _ in range(args.repeat // 10):
                    for kind, call in (("json", json_call), ("page", page_call)):
                        walls, cpus = measure(call, 10)
                        results[kind][0].extend(walls)
                        results[kind][1].extend(cpus)
                json_wall = statistics.median(results["json"][0]) * 1000
                json_cpu = statistics.mean(results["json"][1]) * 1000
                page_wall = statistics.median(results["page"][0]) * 1000
                page_cpu = statistics.mean(results["page"][1]) * 1000
                print(
                    f"{name:34}{json_wall:11.2f}{json_cpu:11.2f}{page_wall:11.2f}"
                    f"{page_cpu:11.2f}{page_cpu / json_cpu:11.2f}x"
                )


if __name__ == "__main__":
    main()
