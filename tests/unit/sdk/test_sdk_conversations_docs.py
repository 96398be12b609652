"""The Python examples of docs/sdk/conversations.md run as written (against a real loopback ``dinfer store``)."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pytest
from tests.fixtures.servers import serve_app

from dinfer.store_service import StoreServiceConfig, create_store_app

DOC = Path(__file__).resolve().parents[3] / "docs" / "sdk" / "conversations.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
KEY = "0x" + "44" * 32


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) == 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_doc_example_runs(index: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each example runs in a fresh namespace given ``private_key``, ``tmp_dir`` and ``store_url``."""
    started, stop = threading.Event(), threading.Event()
    urls: list[str] = []

    async def server() -> None:
        async with serve_app(create_store_app(StoreServiceConfig(data_dir=tmp_path / "store"))) as url:
            urls.append(url)
            started.set()
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(server(),), daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        exec(EXAMPLES[index], {"asyncio": asyncio, "private_key": KEY, "tmp_dir": tmp_path / "local",
                               "store_url": urls[0]})
    finally:
        stop.set()
        thread.join(30)
    if index == 0:
        assert "## 2. assistant" in capsys.readouterr().out
