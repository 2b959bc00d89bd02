"""What decoding a create's or replace's body into a built-in kind's Go type refuses: its times.

A real API server decodes a built-in object into its Go struct before any validation; a time that
metav1.Time (RFC3339) or metav1.MicroTime (RFC3339Micro) cannot parse fails the decode, and the
handler answers 400 BadRequest, `<Kind> in version "<v>" cannot be handled as a <Kind>: <error>`
(apiserver endpoints/handlers/rest.go transformDecodeError). encoding/json stops at the first
failing field in the order the body lists them. A custom resource is decoded as unstructured, so
none of this applies to it. Patches decode the patched object and answer 422 instead (patch.go);
that path is not modelled: nothing here patches a Lease or an Event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from . import gotime

_TIME: Final = gotime.RFC3339
_MICRO: Final = gotime.RFC3339_MICRO

# A struct: (its Go type name, its fields); a field is a layout, a struct, or [struct] for a list.
Struct = tuple[str, Mapping[str, Any]]

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


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "object" if isinstance(value, dict) else "array"


def _first_error(struct: Struct, body: Mapping[str, Any], stack: list[str]) -> str | None:
    name, fields = struct
    for key, value in body.items():  # in the body's order, as the decoder reads it
        want = fields.get(key)
        if want is None or value is None:
            continue
        path = [*stack, key]
        if isinstance(want, str):
            if not isinstance(value, str):
                field = f"{name}.{'.'.join(path)}"
                return (
                    f"json: cannot unmarshal {_json_kind(value)} into Go struct field {field} of type string"
                )
            if (err := gotime.parse(want, value)) is not None:
                return err
        elif isinstance(want, list):
            for item in value if isinstance(value, list) else []:
                if isinstance(item, Mapping) and (err := _first_error(want[0], item, path)) is not None:
                    return err
        elif isinstance(value, Mapping) and (err := _first_error(want, value, path)) is not None:
            return err
    return None


def decode_error(group: str, plural: str, version: str, body: Mapping[str, Any]) -> str | None:
    """The 400's message when `body` does not decode as the built-in kind, else None."""
    struct = _KINDS.get((group, plural))
    if struct is None:
        return None
    if (err := _first_error(struct, body, [])) is None:
        return None
    kind = struct[0]
    given = str(body.get("kind") or kind)
    given_version = str(body.get("apiVersion") or version).rpartition("/")[2]
    return f'{given} in version "{given_version}" cannot be handled as a {kind}: {err}'
