"""Promise 8 at the model seam: garbage model output never crashes the runtime and never
commits; each case is journaled as a typed reject or a typed transport error."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import Ledger, offer_boundary, scripted_runtime
from threshold import Abort, RejectPolicy, RunContext, TransportPolicy

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)

garbage = st.one_of(
    st.text(),                                              # anything, incl. NUL and surrogates
    st.binary(),                                            # bytes, mostly not UTF-8
    json_values.map(json.dumps),                            # valid JSON, wrong shape
    st.builds(lambda n: "{" * n, st.integers(1, 5000)),     # deep nesting
    st.builds(lambda s: json.dumps({"action": "renew", "discount_pct": 5, "note": s}),
              st.text()),                                   # hallucinated extra field
    st.builds(lambda v: json.dumps({"action": v, "discount_pct": v}), json_values),
    st.just("x" * 300_000),                                 # huge
    st.just('{"action": "renew", "discount_pct": 5}\x00'),  # trailing NUL
    st.just('{"action": "renew", "discount_pct": ' + "9" * 5000 + "}"),  # int too long
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outputs=st.lists(garbage, min_size=1, max_size=3))
def test_garbage_model_output_is_rejected_or_a_transport_error(outputs: list[Any]) -> None:
    """No garbage commits, nothing raises, every attempt is journaled with a typed reason."""
    ledger = Ledger()
    runtime, _ = scripted_runtime(outputs)
    boundary = offer_boundary(ledger, policy=RejectPolicy(max_attempts=3, exhausted=Abort()),
                              transport=TransportPolicy(max_retries=3))

    @runtime.agent("g")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> str:
        return (await ctx.cross(boundary, {"c": "x"})).outcome

    async def go() -> None:
        await runtime.start("g", {}, run_id="g")
        await runtime.run_until_idle()
        run = await runtime.store.get_run("g")
        assert run is not None and run.status == "completed", run
        attempts = await runtime.store.list_attempts("g")
        verdicts = await runtime.store.list_verdicts("g")
        assert attempts, "every model answer is journaled"
        for attempt in attempts:
            mine = [v for v in verdicts if v.attempt == attempt.attempt]
            if attempt.kind == "transport_error":
                assert attempt.error_kind == "malformed" and not mine
            elif run.result != "committed":
                assert any(v.verdict == "reject" and v.code for v in mine)
        if run.result == "committed":
            # Only a well-formed, in-policy answer may commit (hypothesis found one).
            committed = (await runtime.store.list_crossings("g"))[0]
            assert committed.outcome["discount_pct"] <= 30
        else:
            assert ledger.calls == []

    asyncio.run(go())
