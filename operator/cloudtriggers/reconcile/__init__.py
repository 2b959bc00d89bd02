"""Provider-agnostic reconcile: observe the provider, compare with the spec, act, write conditions.

Everything here is plain Python over two interfaces (Kube, Provider), so it is tested without kopf.
Level-triggered: each pass starts from the Trigger as stored and the provider as it answers now.

The Reconciler (reconciler.py) is composed of one mixin per phase, each in its own module:
observe.py (observe the provider, repair drift in place), create.py, replace.py, rotate.py and
delete.py.
passes.py holds the state of one pass and its outcome; claims.py who claims which provider object.
"""

from .claims import Claim, ClaimIndex, winner
from .passes import (
    CLOCK_SKEW,
    PAUSED_ANNOTATION,
    REQUESTED_ANNOTATION,
    Outcome,
    Retry,
    condition,
    has_finalizer,
    meta_uid,
    set_condition,
)
from .reconciler import CREDENTIAL_KEYS, OPTIONAL_CREDENTIAL_KEYS, Reconciler
from .rotate import ROTATE_ANNOTATION

__all__ = [
    "CLOCK_SKEW",
    "CREDENTIAL_KEYS",
    "OPTIONAL_CREDENTIAL_KEYS",
    "PAUSED_ANNOTATION",
    "REQUESTED_ANNOTATION",
    "ROTATE_ANNOTATION",
    "Claim",
    "ClaimIndex",
    "Outcome",
    "Reconciler",
    "Retry",
    "condition",
    "has_finalizer",
    "meta_uid",
    "set_condition",
    "winner",
]
