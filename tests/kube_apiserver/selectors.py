"""Label and field selectors, as used by `labelSelector=` and `fieldSelector=` list/watch parameters."""
from __future__ import annotations

import re

from .errors import bad_request

_SET_TERM = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_./-]*))?\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str | None):
    """Returns a predicate over a labels dict."""
    checks = []
    for term in _split_terms(text or ""):
        m = _SET_TERM.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
            continue
        m = _EQ_TERM.match(term)
        if not m or (m.group(1) and m.group(3)):
            raise bad_request(f"unable to parse requirement: invalid label selector term {term!r}")
        negate, key, op, value = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        if op is None:
            checks.append((lambda labels, k=key: k not in labels) if negate else (lambda labels, k=key: k in labels))
        elif op == "!=":
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        else:
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
    return lambda labels: all(check(labels) for check in checks)


def _field_value(obj: dict, path: str) -> str:
    value = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str | None):
    """Returns a predicate over an object. Any dotted field path is accepted (e.g. metadata.name)."""
    checks = []
    for term in _split_terms(text or ""):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise bad_request(f"invalid field selector: {term!r}")
        path, op, value = m.groups()
        if op == "!=":
            checks.append(lambda obj, p=path, v=value: _field_value(obj, p) != v)
        else:
            checks.append(lambda obj, p=path, v=value: _field_value(obj, p) == v)
    return lambda obj: all(check(obj) for check in checks)


class Selector:
    def __init__(self, label_selector: str | None = None, field_selector: str | None = None):
        self._labels = parse_label_selector(label_selector)
        self._fields = parse_field_selector(field_selector)

    def __call__(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        return self._labels(obj.get("metadata", {}).get("labels") or {}) and self._fields(obj)
