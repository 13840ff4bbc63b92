"""Fakes and test tools for users of threshold: the same ones its own tests use."""

from threshold.clock import VirtualClock
from threshold.models import ScriptedModel, SimModel
from threshold.testing import store_contract
from threshold.testing._crash import CRASH_WINDOWS, CrashPlan

__all__ = ["CRASH_WINDOWS", "CrashPlan", "ScriptedModel", "SimModel", "VirtualClock",
           "store_contract"]
