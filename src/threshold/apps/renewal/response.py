"""A seeded model of how a customer answers a renewal offer.

The renewal agent's outcomes must emerge from a run, so the customer is simulated; this is
the simulation, grounded in each customer's real row of the Telco data. One call draws
three uniforms ``u1, u2, u3`` from ``random.Random(derive_seed(seed, stream_key,
customer_id))`` and decides in three steps.

1. Intent to walk away. With price sensitivity ``s = monthly_charges / 65`` (65 $ is about
   the data's mean), tenure share ``t = min(tenure, 72) / 72`` and discount ``d`` in %::

       logit(p_walk) = (+1.3 if churn else -2.4)
                     + {Month-to-month: +0.5, One year: 0, Two year: -0.5}[contract]
                     - 1.0 * t
                     + 0.6 * (s - 1)
                     - 1.4 * s * (1 - exp(-d / 12))      # diminishing returns
                     + 0.25 * max(0, term_months - 12) / 12

   The customer walks when ``u1 < p_walk``. The churn label carries most of the weight,
   so the data's churners are the ones who mostly walk; a discount helps most where the
   bill is high.
2. Counter-offer, for those who stay::

       logit(p_counter) = -2.7 + 1.0 * churn + 0.8 * (s - 1) + 0.4 * month_to_month
                          - 0.1 * d

   A customer who counters (``u2 < p_counter``) asks for ``d + 5``, ``d + 10`` or
   ``d + 15`` percent (capped at 100), chosen by ``u2``.
3. Reply. Each outreach attempt is missed with probability 0.55 by a walker and 0.08 by
   anyone else, so ``p_silent = miss ** channel_attempts`` (zero attempts: always
   silent). A silent customer gives ``no_reply``; a walker who answers gives ``decline``.

Because the uniforms depend only on (seed, stream_key, customer) and every threshold
falls as the discount rises, the same stream with a larger discount never turns an
``accept`` into anything else: comparisons between offers use common random numbers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

from threshold.apps.renewal.customers import Customer
from threshold.errors import ConfigError
from threshold.ids import derive_seed

MODEL_VERSION: Final = "customer-response/1"

ResponseKind = Literal["accept", "decline", "counter", "no_reply"]

_CONTRACT_SHIFT: Final = {"Month-to-month": 0.5, "One year": 0.0, "Two year": -0.5}
_REFERENCE_CHARGES: Final = 65.0
_MISS_WALKER: Final = 0.55
_MISS_ENGAGED: Final = 0.08
_COUNTER_STEPS: Final = (5, 10, 15)


@dataclass(frozen=True, slots=True)
class Response:
    """A customer's answer; ``counter_pct`` is the discount asked for, on counters only."""

    kind: ResponseKind
    counter_pct: int | None = None

    def __post_init__(self) -> None:
        if (self.kind == "counter") != (self.counter_pct is not None):
            raise ConfigError("Response: counter_pct is set exactly when kind is 'counter'")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _sensitivity(customer: Customer) -> float:
    return customer.monthly_charges / _REFERENCE_CHARGES


def walk_probability(customer: Customer, offer_discount_pct: float, term_months: int) -> float:
    """Step 1 of the module docstring: the chance the customer intends to walk away."""
    s = _sensitivity(customer)
    t = min(customer.tenure_months, 72) / 72
    logit = (
        (1.3 if customer.churn else -2.4)
        + _CONTRACT_SHIFT[customer.contract]
        - 1.0 * t
        + 0.6 * (s - 1)
        - 1.4 * s * (1 - math.exp(-offer_discount_pct / 12))
        + 0.25 * max(0, term_months - 12) / 12
    )
    return _sigmoid(logit)


def counter_probability(customer: Customer, offer_discount_pct: float) -> float:
    """Step 2 of the module docstring: the chance a customer who stays asks for more."""
    logit = (
        -2.7
        + 1.0 * customer.churn
        + 0.8 * (_sensitivity(customer) - 1)
        + 0.4 * (customer.contract == "Month-to-month")
        - 0.1 * offer_discount_pct
    )
    return _sigmoid(logit)


class CustomerResponseModel:
    """Simulated customers: the same (seed, customer, offer, stream_key) gives one answer."""

    version: Final = MODEL_VERSION

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def respond(
        self,
        customer: Customer,
        offer_discount_pct: int,
        term_months: int,
        channel_attempts: int,
        stream_key: str,
    ) -> Response:
        """How ``customer`` answers a renewal at ``offer_discount_pct`` % off."""
        if not 0 <= offer_discount_pct <= 100:
            raise ConfigError(f"offer_discount_pct must be in [0, 100], got {offer_discount_pct}")
        if term_months <= 0:
            raise ConfigError(f"term_months must be positive, got {term_months}")
        if channel_attempts < 0:
            raise ConfigError(f"channel_attempts must be >= 0, got {channel_attempts}")
        # The customer id joins the key so two customers never share draws by accident.
        rng = random.Random(derive_seed(self.seed, stream_key, customer.customer_id))
        u_walk, u_counter, u_reply = rng.random(), rng.random(), rng.random()

        walks = u_walk < walk_probability(customer, offer_discount_pct, term_months)
        miss = _MISS_WALKER if walks else _MISS_ENGAGED
        if u_reply < miss**channel_attempts:
            return Response("no_reply")
        if walks:
            return Response("decline")
        p_counter = counter_probability(customer, offer_discount_pct)
        if offer_discount_pct < 100 and u_counter < p_counter:
            # Reuse u_counter's position below p_counter to pick the step: no extra draw.
            step = _COUNTER_STEPS[int(u_counter / p_counter * len(_COUNTER_STEPS))]
            return Response("counter", counter_pct=min(100, offer_discount_pct + step))
        return Response("accept")


__all__ = [
    "MODEL_VERSION",
    "CustomerResponseModel",
    "Response",
    "ResponseKind",
    "counter_probability",
    "walk_probability",
]
