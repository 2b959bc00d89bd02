"""What decoding a create's or replace's body into a built-in kind's Go type refuses: times, bytes.

A real API server decodes a built-in object into its Go struct before any validation; a time that
metav1.Time (RFC3339) or metav1.MicroTime (RFC3339Micro) cannot parse, or a Secret's data value
that is not standard base64 ([]byte), fails the decode, and the handler answers 400 BadRequest,
`<Kind> in version "<v>" cannot be handled as a <Kind>: <error>` (apiserver endpoints/handlers/
rest.go transformDecodeError). encoding/json stops at a time that fails (an Unmarshaler's error),
in the order the body lists its fields, but only notes bad base64 and goes on (saveError): a time
error anywhere wins over it, else the first bad base64 is the answer. A custom resource is decoded
as unstructured, so none of this applies to it. Patches decode the patched object and answer 422
instead (patch.go); that path is not modelled: nothing here patches a Lease or an Event, and a
Secret's data is patched only with values encoded by the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from . import gotime

_TIME: Final = gotime.RFC3339
_MICRO: Final = gotime.RFC3339_MICRO

# A struct: (its Go type name, its fields); a field is a layout, a struct, [struct] for a list, or
# BYTES_MAP for a map[string][]byte.
Struct = tuple[str, Mapping[str, Any]]
BYTES_MAP: Final = "map[string][]byte"

_MANAGED_FIELDS_ENTRY: Final[Struct] = ("ManagedFieldsEntry", {"time": _TIME})
_OBJECT_META: Final[Struct] = (
    "ObjectMeta",
    {"creationTimestamp": _TIME, "deletionTimestamp": _TIME, "managedFields": [_MANAGED_FIELDS_ENTRY]},
)
_KINDS: Final[dict[tuple[str, str], Struct]] = {
    # k8s.io/api coordination/v1 LeaseSpec: acquireTime, renewTime are MicroTime.
    ("coordination.k8s.io", "leases"): (
        "Lease",
        {"metadata": _OBJECT_META, "spec": ("LeaseSpec", {"acquireTime": _MICRO, "renewTime": _MICRO})},
    ),
    ("", "secrets"): ("Secret", {"metadata": _OBJECT_META, "data": BYTES_MAP}),
    # core/v1 Event: firstTimestamp, lastTimestamp are Time; eventTime and the series' are MicroTime.
    ("", "events"): (
        "Event",
        {
            "metadata": _OBJECT_META,
            "firstTimestamp": _TIME,
            "lastTimestamp": _TIME,
            "eventTime": _MICRO,
            "series": ("EventSeries", {"lastObservedTime": _MICRO}),
        },
    ),
}


def _type_error(value: Any, field: str, go_type: str) -> str:
    """encoding/json's UnmarshalTypeError, with the struct and the field path it was in."""
    if isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int | float):
        kind = "number"
    else:
        kind = "object" if isinstance(value, dict) else "array"
    return f"json: cannot unmarshal {kind} into Go struct field {field} of type {go_type}"


class _Decoder:
    """One body's decode: the first Unmarshaler error ends it; a bad []byte is saved (the first)."""

    def __init__(self) -> None:
        self.saved: str | None = None

    def struct(self, struct: Struct, body: Mapping[str, Any], stack: list[str]) -> str | None:
        name, fields = struct
        for key, value in body.items():  # in the body's order, as the decoder reads it
            want = fields.get(key)
            if want is None or value is None:
                continue
            path = [*stack, key]
            field = f"{name}.{'.'.join(path)}"
            if want == BYTES_MAP:
                for item in value.values() if isinstance(value, Mapping) else []:
                    if self.saved is None and item is not None:
                        self.saved = _bytes_error(item, field)
            elif isinstance(want, str):
                if not isinstance(value, str):
                    return _type_error(value, field, "string")
                if (err := gotime.parse(want, value)) is not None:
                    return err
            elif isinstance(want, list):
                for item in value if isinstance(value, list) else []:
                    if isinstance(item, Mapping) and (err := self.struct(want[0], item, path)) is not None:
                        return err
            elif isinstance(value, Mapping) and (err := self.struct(want, value, path)) is not None:
                return err
        return None


def _bytes_error(value: Any, field: str) -> str | None:
    if not isinstance(value, str):
        return _type_error(value, field, "[]uint8")
    at = base64_error(value.encode())
    return None if at is None else f"illegal base64 data at input byte {at}"


_ALPHABET: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NEWLINES: Final = (ord("\n"), ord("\r"))
_PAD: Final = ord("=")


# Well-formed standard base64 with no newlines: what clients send, decoded by Go without a doubt.
_CANONICAL: Final = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def base64_error(src: bytes) -> int | None:
    """Go's base64.StdEncoding.Decode: None, or the offset its CorruptInputError names. Quantum by
    quantum as encoding/base64 decodeQuantum does: newlines skipped, padding required, nothing after
    it (the fast path it takes first reports the same offsets: it falls back to this on any doubt)."""
    if _CANONICAL.fullmatch(src):
        return None
    si = 0
    while True:
        j = 0
        while j < 4:
            if si == len(src):
                if j == 0:
                    return None
                return si - j  # a quantum cut short: StdEncoding pads
            c = src[si]
            si += 1
            if c in _ALPHABET:
                j += 1
                continue
            if c in _NEWLINES:
                continue
            if c != _PAD or j < 2:
                return si - 1
            if j == 2:  # "==" expected: the first one is consumed
                while si < len(src) and src[si] in _NEWLINES:
                    si += 1
                if si == len(src):
                    return len(src)
                if src[si] != _PAD:
                    return si - 1
                si += 1
            while si < len(src) and src[si] in _NEWLINES:
                si += 1
            return si if si < len(src) else None  # trailing garbage after the padding


def decode_error(group: str, plural: str, version: str, body: Mapping[str, Any]) -> str | None:
    """The 400's message when `body` does not decode as the built-in kind, else None."""
    struct = _KINDS.get((group, plural))
    if struct is None:
        return None
    decoder = _Decoder()
    if (err := decoder.struct(struct, body, [])) is None and (err := decoder.saved) is None:
        return None
    kind = struct[0]
    given = str(body.get("kind") or kind)
    given_version = str(body.get("apiVersion") or version).rpartition("/")[2]
    return f'{given} in version "{given_version}" cannot be handled as a {kind}: {err}'
