"""What an audit row keeps of a request body: bounded, never raising, secrets redacted."""
from __future__ import annotations

import json

import pytest

from robin.audit.service import MAX_DEPTH, MAX_ITEMS, MAX_JSON_CHARS, MAX_STRING, REDACTED, redacted


def nested(depth: int, leaf="x") -> dict:
    body = leaf
    for _ in range(depth):
        body = {"x": body}
    return body


def depth_of(copy) -> int:
    depth = 0
    while isinstance(copy, dict) and "x" in copy:
        copy, depth = copy["x"], depth + 1
    return depth


def test_ordinary_body_is_kept_whole():
    body = {"name": "db", "size_bytes": 2**30, "features": ["layering"], "metadata": {"app": "pg"},
            "source": {"image": "src", "snapshot": None}, "ratio": 0.5, "thin": True}
    assert redacted(body) == (body, False)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 600, 100_000])
def test_deep_nesting_is_cut_at_a_fixed_depth_without_recursion(depth):
    copy, cut = redacted(nested(depth))
    assert cut and depth_of(copy) == MAX_DEPTH
    assert json.dumps(copy).count("<truncated: nested deeper than") == 1


@pytest.mark.parametrize("field", ["key", "Key", "keyring", "cephx_key", "API_KEY", "password", "DB_Password",
                                   "passwd", "token", "accessToken", "secret", "client_secret", "credentials",
                                   "Authorization", "x" * 1000 + "password"])
def test_secret_fields_are_redacted_at_any_depth(field):
    body = {field: "s3cr3t", "list": [{"inner": {field: {"deeper": "s3cr3t"}}}]}
    copy, _ = redacted(body)
    assert "s3cr3t" not in json.dumps(copy)
    assert REDACTED in copy.values() and "inner" in copy["list"][0]


def test_long_strings_and_names_are_clipped_and_marked():
    copy, cut = redacted({"n" * 5000: "v" * 5000})
    [(name, value)] = copy.items()
    assert cut and name.startswith("n" * MAX_STRING) and "<truncated: 5000 chars>" in name
    assert value == "v" * MAX_STRING + "<truncated: 5000 chars>"


def test_long_arrays_and_objects_keep_their_first_items_and_say_how_many_more():
    copy, cut = redacted({"items": list(range(1000)), "fields": {f"f{i}": i for i in range(1000)}})
    assert cut
    more = f"<truncated: {1000 - MAX_ITEMS} more>"
    assert copy["items"] == [*range(MAX_ITEMS), more]
    assert len(copy["fields"]) == MAX_ITEMS + 1 and copy["fields"]["<truncated>"] == more


@pytest.mark.parametrize("body", [
    [["é" * 200] * 64] * 64,  # escapes make a stored character up to six
    {f"k{i}": {f"v{j}": "x" * 200 for j in range(64)} for i in range(64)},
    [[[[[[[[0] * 64] * 64] * 64] * 64] * 64] * 64] * 64],
])
def test_whole_copy_stays_within_the_row_budget(body):
    copy, cut = redacted(body)
    assert cut and len(json.dumps(copy)) <= MAX_JSON_CHARS + 1024


def test_values_postgresql_json_refuses_are_replaced():
    copy, cut = redacted({"nan": float("nan"), "inf": float("-inf"), "huge": 10**400, "ok": 2**63 - 1})
    assert copy["nan"] == "<not JSON: nan>" and copy["inf"] == "<not JSON: -inf>"
    assert copy["huge"].startswith("<truncated") and copy["ok"] == 2**63 - 1 and cut
    json.dumps(copy, allow_nan=False)
