"""A bounded load test on loopback: 200 prompt requests from 20 concurrent clients against one
embedded image, on a real uvicorn server with the small SAM. Every answer must be a 200 with
three masks; the latencies are printed (p50 / p95)."""

from __future__ import annotations

import pytest
from web_helpers import coffee_png, http_upload, live_server, load_test, make_app, web_checkpoint

pytest.importorskip("uvicorn")


def test_200_prompts_from_20_clients_without_errors(tmp_path):
    app = make_app(tmp_path, web_checkpoint(tmp_path / "sam_web.safetensors"))
    with live_server(app) as url:
        image_id = http_upload(url, coffee_png(tmp_path / "coffee.png"))
        result = load_test(url, image_id, requests=200, clients=20, timeout=60)
    print(f"\nload test: {result['requests']} prompts, {result['clients']} clients, "
          f"{result['seconds']:.1f} s ({result['per_second']:.0f}/s): "
          f"p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms")
    assert result["errors"] == []
    assert len(result["latencies_ms"]) == 200
    assert app.state.engine.encodes == 1  # prompts never re-encode
