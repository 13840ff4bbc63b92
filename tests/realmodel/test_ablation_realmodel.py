"""The spine ablation against two real model versions: two GGUF weight files served by two
llama.cpp servers, reached through ``openai:`` model specs."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from threshold.errors import MissingExtraError
from threshold.models._guard import allow_model_requests
from threshold.replay._ablation import AblationConfig, spine_ablation

try:
    from threshold.models._openai import OpenAIModel
except MissingExtraError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(str(exc), allow_module_level=True)


@pytest.mark.realmodel
def test_spine_ablation_with_two_real_model_versions(realmodels: Any) -> None:
    """Recorded under model-v1 and replayed under model-v2, both spines are measured on real
    completions; the same real model on both sides shows no drift (temperature 0)."""
    models = {f"openai:{alias}": OpenAIModel(alias, base_url=realmodels.urls[alias],
                                             api_key="unused")
              for alias in ("model-v1", "model-v2")}

    async def run(a: str, b: str) -> dict[str, Any]:
        try:
            return await spine_ablation(AblationConfig(customers=4, bootstrap=200,
                                                       models=(a, b)), models=models)
        finally:
            for model in models.values():
                await model.aclose()

    with allow_model_requests():
        drift = asyncio.run(run("openai:model-v1", "openai:model-v2"))
        same = asyncio.run(run("openai:model-v1", "openai:model-v1"))
    for spine in drift["spines"].values():
        assert spine["runs"] == 4 and spine["crossings"]["total"] >= 4
        low, high = spine["changed_rate"]["ci95"]
        assert 0.0 <= low <= spine["changed_rate"]["value"] <= high <= 1.0
    assert all(s["any_divergence"]["value"] == 0.0 for s in same["spines"].values())
