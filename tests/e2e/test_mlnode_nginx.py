"""Real nginx in front of two ML node versions: versioned prefixes and the default route (design §5, upgrades)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from tests.fixtures import tiny_gguf_path
from tests.fixtures.processes import mlnode_process, nginx_process, render_nginx_template
from tests.fixtures.servers import free_port

__all__ = ["tiny_gguf_path"]
OLD, NEW = "v0.3.9", "v0.3.10"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("nginx-e2e")
    old_port, new_port, nginx_port = free_port(), free_port(), free_port()
    with (
        mlnode_process(old_port, OLD, "node-old", work),
        mlnode_process(new_port, NEW, "node-new", work, version_from_env=True),
    ):
        conf = render_nginx_template(
            {
                "MLNODE_LISTEN": f"127.0.0.1:{nginx_port}",
                "MLNODE_A_VERSION": OLD,
                "MLNODE_A_ADDR": f"127.0.0.1:{old_port}",
                "MLNODE_B_VERSION": NEW,
                "MLNODE_B_ADDR": f"127.0.0.1:{new_port}",
                "MLNODE_DEFAULT": "mlnode_b",
            }
        )
        with nginx_process(work / "nginx", conf, nginx_port) as url:
            yield url


def test_versioned_prefixes_reach_their_own_ml_node(proxy: str) -> None:
    with httpx.Client(base_url=proxy, timeout=30) as c:
        assert c.get(f"/{OLD}/api/v1/state").json()["version"] == OLD
        assert c.get(f"/{NEW}/api/v1/state").json()["version"] == NEW
        assert c.get(f"/{OLD}/health").json()["node_id"] == "node-old"
        assert c.get(f"/{NEW}/livez").status_code == 200
        # unversioned → the default (current) version; an unknown version gets that node's 404
        assert c.get("/api/v1/state").json()["version"] == NEW
        assert c.get("/v9.9.9/api/v1/state").status_code == 404


def test_inference_and_stop_through_the_proxy(proxy: str, tiny_gguf_path: Path) -> None:
    with httpx.Client(base_url=proxy, timeout=60) as c:
        up = c.post(f"/{OLD}/api/v1/inference/up", json={"model": "tiny", "model_path": str(tiny_gguf_path)})
        assert up.status_code == 200 and up.json()["version"] == OLD
        assert c.get(f"/{NEW}/api/v1/state").json()["state"] == "UNKNOWN"  # only the old one loaded

        body = {
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with c.stream("POST", f"/{OLD}/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and orjson.loads(events[-2])["usage"]["completion_tokens"] <= 4
        # the new version has no model: a clear 503 with Retry-After passes through nginx untouched
        refused = c.post(f"/{NEW}/v1/chat/completions", json={**body, "stream": False})
        assert refused.status_code == 503 and "retry-after" in refused.headers

        # upgrade: the host calls stop on the old version
        assert c.post(f"/{OLD}/api/v1/stop").json()["state"] == "STOPPED"
        assert c.get(f"/{OLD}/api/v1/state").json()["state"] == "STOPPED"
