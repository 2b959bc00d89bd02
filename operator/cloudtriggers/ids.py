"""One copy of each Trigger's uid, name and namespace, however many watch events and answers bring them.

Every watch event and every answer of the API server decodes these strings anew, and each index
keyed by uid (the scheduler's, the claims', the credentials users', the metrics', the reconciler's)
kept the copy of whichever event or answer reached it first: at 3,000 Triggers about 13 decoded
strings a Trigger stayed alive where 3 carry the information. Interned, every index shares one copy.
CPython's interned strings are mortal: a Trigger's go when the last index lets go of them.
"""

from __future__ import annotations

import sys
from typing import TypeVar

T = TypeVar("T")

_FIELDS = ("uid", "name", "namespace")


def intern_ids(obj: T) -> T:
    """`obj` (a Trigger or any object with metadata), its metadata's uid, name and namespace interned."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        for key in _FIELDS:
            value = meta.get(key)
            if type(value) is str:
                meta[key] = sys.intern(value)
    return obj
