"""GET /v1/models/{model} with the openai client."""

from __future__ import annotations

import openai
import pytest

from .conftest import Gateway


def test_retrieve_model_with_the_openai_client(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    listed = {m.id: m for m in client.models.list()}
    for name in ("auto", "auto:quality", "auto:cost", "frontier", "keyless"):
        model = client.models.retrieve(name)
        assert model.id == name and model.object == "model" and model == listed[name]
    assert client.models.retrieve("auto").owned_by == "autoroute"
    assert client.models.retrieve("frontier").owned_by == "openai"
    for unknown in ("auto:fastest", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve(unknown)
        assert info.value.code == "model_not_found" and info.value.param == "model"
