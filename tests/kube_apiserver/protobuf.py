"""Reading the Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`) of the kinds kubectl's typed
commands send in it: Namespace (`kubectl create namespace`), Secret (`kubectl create secret`) and ConfigMap
(`kubectl create configmap`). client-go falls back to JSON after a 415 only for CBOR, not for protobuf, so kubectl
works against a server only if the server reads these bodies.

The encoding is a 4-byte magic `k8s\\0` and a `runtime.Unknown` message whose `raw` field holds the object's own
message; field numbers are those of k8s.io/api/core/v1 and k8s.io/apimachinery/pkg/apis/meta/v1 generated.proto.
Go marshals a struct's scalar fields even when they are zero; decoding then re-encoding as JSON drops them
(`omitempty`), which `_prune` does here. Only writing is modelled: every answer is JSON."""
from __future__ import annotations

import base64
from datetime import UTC, datetime

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# A field is (name, type, repeated); a type is a scalar name, a message schema (dict), or ("map", key, value).
STRING, BYTES, INT, BOOL, TIME = "string", "bytes", "int", "bool", "time"

_TYPE_META = {1: ("apiVersion", STRING, False), 2: ("kind", STRING, False)}
_UNKNOWN = {1: ("typeMeta", _TYPE_META, False), 2: ("raw", "raw", False), 3: ("contentEncoding", STRING, False),
            4: ("contentType", STRING, False)}
_OWNER_REFERENCE = {1: ("kind", STRING, False), 3: ("name", STRING, False), 4: ("uid", STRING, False),
                    5: ("apiVersion", STRING, False), 6: ("controller", BOOL, False),
                    7: ("blockOwnerDeletion", BOOL, False)}
_OBJECT_META = {1: ("name", STRING, False), 2: ("generateName", STRING, False), 3: ("namespace", STRING, False),
                5: ("uid", STRING, False), 6: ("resourceVersion", STRING, False), 7: ("generation", INT, False),
                8: ("creationTimestamp", TIME, False), 9: ("deletionTimestamp", TIME, False),
                10: ("deletionGracePeriodSeconds", INT, False), 11: ("labels", ("map", STRING, STRING), False),
                12: ("annotations", ("map", STRING, STRING), False),
                13: ("ownerReferences", _OWNER_REFERENCE, True), 14: ("finalizers", STRING, True)}
KINDS = {
    ("v1", "Namespace"): {1: ("metadata", _OBJECT_META, False),
                          2: ("spec", {1: ("finalizers", STRING, True)}, False),
                          3: ("status", {1: ("phase", STRING, False)}, False)},
    ("v1", "Secret"): {1: ("metadata", _OBJECT_META, False), 2: ("data", ("map", STRING, BYTES), False),
                       3: ("type", STRING, False), 4: ("stringData", ("map", STRING, STRING), False),
                       5: ("immutable", BOOL, False)},
    ("v1", "ConfigMap"): {1: ("metadata", _OBJECT_META, False), 2: ("data", ("map", STRING, STRING), False),
                          3: ("binaryData", ("map", STRING, BYTES), False), 4: ("immutable", BOOL, False)},
}


class ProtobufError(ValueError):
    pass


class UnknownKind(ProtobufError):
    """A well-formed body of a kind this module has no schema for."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtobufError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, wire type, value) for each field: an int for varints and fixed widths, bytes for the rest."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ProtobufError("truncated length-delimited field")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos:pos + width], "little"), pos + width
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes) -> str | None:
    seconds = 0
    for number, wire, value in _fields(data):
        if number == 1 and wire == 0:
            seconds = _signed(value)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if seconds else None


def _scalar(kind, wire: int, value):
    expected = 0 if kind in (INT, BOOL) else 2
    if wire != expected:
        raise ProtobufError(f"wire type {wire} where {kind} was expected")
    if kind == STRING:
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ProtobufError("a string field is not UTF-8") from None
    if kind == BYTES:
        return base64.b64encode(value).decode()  # []byte in JSON
    if kind == "raw":
        return value
    if kind == INT:
        return _signed(value)
    if kind == BOOL:
        return bool(value)
    if kind == TIME:
        return _time(value)
    return decode_message(value, kind)


def decode_message(data: bytes, schema: dict) -> dict:
    obj: dict = {}
    for number, wire, value in _fields(data):
        if number not in schema:
            continue  # as Go's generated code skips unknown fields
        name, kind, repeated = schema[number]
        if isinstance(kind, tuple):  # a map: repeated entries of {1: key, 2: value}
            entry = decode_message(value, {1: ("key", kind[1], False), 2: ("value", kind[2], False)})
            obj.setdefault(name, {})[entry.get("key", "")] = entry.get("value", "")
        elif repeated:
            obj.setdefault(name, []).append(_scalar(kind, wire, value))
        else:
            obj[name] = _scalar(kind, wire, value)
    return obj


def _prune(value):
    """What encoding/json with `omitempty` leaves of a decoded struct: no empty strings, zero ints, nil times,
    empty maps or lists. Booleans are pointers in these kinds (`immutable`) or always meaningful, so they stay."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ("", 0, None, {}, []) or isinstance(v, bool)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _prune_object(obj: dict) -> dict:
    """_prune, except that a map's values stay as sent (an empty ConfigMap value is data)."""
    maps = {k: v for k, v in obj.items() if k in ("data", "binaryData", "stringData")}
    pruned = _prune({k: v for k, v in obj.items() if k not in maps})
    meta = obj.get("metadata") or {}
    for field in ("labels", "annotations"):
        if meta.get(field):
            pruned.setdefault("metadata", {})[field] = meta[field]
    return {**pruned, **{k: v for k, v in maps.items() if v}}


def decode(body: bytes) -> dict:
    """The object a protobuf request body carries, as the JSON a client would have sent (kind and apiVersion
    included). ProtobufError if the body is not the Kubernetes protobuf encoding, UnknownKind if its kind is not
    one of KINDS."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf magic number")
    unknown = decode_message(body[len(MAGIC):], _UNKNOWN)
    if unknown.get("contentEncoding"):
        raise ProtobufError(f"content encoding {unknown['contentEncoding']!r} is not supported")
    type_meta = unknown.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise UnknownKind(f"{kind or '(no kind)'} {api_version or '(no apiVersion)'}")
    obj = _prune_object(decode_message(unknown.get("raw", b""), schema))
    return {"kind": kind, "apiVersion": api_version, **obj}
