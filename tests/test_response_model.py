"""The seeded customer-response model: deterministic, and grounded in the data's labels."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threshold.apps.renewal.customers import Customer, load_customers
from threshold.apps.renewal.response import (
    CustomerResponseModel,
    Response,
    walk_probability,
)
from threshold.errors import ConfigError

CUSTOMERS = load_customers().customers
SUBSET = load_customers(subset=True).customers


def respond_all(
    model: CustomerResponseModel, pct: int, *, customers: list[Customer] = CUSTOMERS
) -> list[Response]:
    return [model.respond(c, pct, 12, 2, f"renewal/{c.customer_id}/offer") for c in customers]


def walk_rate(responses: list[Response]) -> float:
    return sum(r.kind in ("decline", "no_reply") for r in responses) / len(responses)


def test_same_inputs_give_the_same_response() -> None:
    """A fixed seed, customer, offer and stream key always give the same response."""
    first = respond_all(CustomerResponseModel(11), 10, customers=SUBSET)
    again = respond_all(CustomerResponseModel(11), 10, customers=SUBSET)
    assert first == again


def test_seed_and_stream_key_change_the_draws() -> None:
    """Another seed or another stream key gives a different sequence of responses."""
    base = respond_all(CustomerResponseModel(11), 10, customers=SUBSET)
    assert respond_all(CustomerResponseModel(12), 10, customers=SUBSET) != base
    model = CustomerResponseModel(11)
    other = [model.respond(c, 10, 12, 2, f"renewal/{c.customer_id}/retry") for c in SUBSET]
    assert other != base


def test_churners_walk_away_far_more_often() -> None:
    """With no discount, decline+no_reply is much more common among Churn=Yes customers."""
    responses = respond_all(CustomerResponseModel(3), 0)
    churned = [r for c, r in zip(CUSTOMERS, responses, strict=True) if c.churn]
    stayed = [r for c, r in zip(CUSTOMERS, responses, strict=True) if not c.churn]
    assert walk_rate(churned) > 0.6
    assert walk_rate(stayed) < 0.2
    assert walk_rate(churned) > 3 * walk_rate(stayed)


def test_twenty_percent_discount_raises_acceptance() -> None:
    """A 20 % offer is accepted by clearly more of the same customers than a 0 % offer."""
    model = CustomerResponseModel(5)
    at_zero = Counter(r.kind for r in respond_all(model, 0))["accept"]
    at_twenty = Counter(r.kind for r in respond_all(model, 20))["accept"]
    assert at_twenty > at_zero * 1.1


def test_non_acceptance_without_discount_is_near_the_churn_rate() -> None:
    """With no discount the overall non-acceptance rate lies in 15-40 % (data churn: 26.5 %)."""
    for seed in (1, 2, 3):
        responses = respond_all(CustomerResponseModel(seed), 0)
        non_accept = sum(r.kind != "accept" for r in responses) / len(responses)
        assert 0.15 <= non_accept <= 0.40


def test_every_kind_of_response_occurs() -> None:
    """Accept, decline, counter and no_reply all emerge; counters ask for more than offered."""
    responses = respond_all(CustomerResponseModel(9), 10)
    assert {r.kind for r in responses} == {"accept", "decline", "counter", "no_reply"}
    assert all(r.counter_pct in (15, 20, 25) for r in responses if r.kind == "counter")


def test_no_outreach_means_no_reply() -> None:
    """A customer never contacted (zero attempts) never replies."""
    model = CustomerResponseModel(1)
    assert {model.respond(c, 10, 12, 0, "k").kind for c in SUBSET} == {"no_reply"}


def test_walk_probability_falls_with_discount_and_tenure() -> None:
    """Walking grows less likely with more discount (diminishing) and with longer tenure."""
    customer = SUBSET[0]
    p = [walk_probability(customer, d, 12) for d in (0, 10, 20, 30)]
    assert p[0] > p[1] > p[2] > p[3]
    assert p[0] - p[1] > p[2] - p[3]
    short = customer.model_copy(update={"tenure_months": 1})
    long = customer.model_copy(update={"tenure_months": 72})
    assert walk_probability(short, 0, 12) > walk_probability(long, 0, 12)


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, len(CUSTOMERS) - 1),
    low=st.integers(0, 100),
    extra=st.integers(0, 100),
    seed=st.integers(0, 2**32),
    key=st.text(max_size=12),
)
def test_more_discount_never_loses_an_acceptance(
    index: int, low: int, extra: int, seed: int, key: str
) -> None:
    """On the same stream, raising the discount never turns an accept into anything else."""
    customer, model = CUSTOMERS[index], CustomerResponseModel(seed)
    high = min(100, low + extra)
    if model.respond(customer, low, 12, 2, key).kind == "accept":
        assert model.respond(customer, high, 12, 2, key).kind == "accept"


def test_bad_arguments_are_refused() -> None:
    """Out-of-range discount, term or attempts, and inconsistent responses, are usage errors."""
    model, customer = CustomerResponseModel(0), SUBSET[0]
    for pct, term, attempts in [(-1, 12, 1), (101, 12, 1), (10, 0, 1), (10, 12, -1)]:
        with pytest.raises(ConfigError):
            model.respond(customer, pct, term, attempts, "k")
    with pytest.raises(ConfigError):
        Response("accept", counter_pct=10)
    with pytest.raises(ConfigError):
        Response("counter")
