from __future__ import annotations

import pytest

from robin.errors import BadRequest
from robin.pagination import decode_cursor, encode_cursor


@pytest.mark.parametrize("key", ["a", "pvc-0f1e", "ünïcode name", ""])
def test_cursor_round_trips(key):
    assert decode_cursor(encode_cursor(key)) == key


@pytest.mark.parametrize("cursor", ["***", "bm90IGpzb24", encode_cursor("x")[:-3] + "!!", "eyJhZnRlciI6IDF9"])
def test_foreign_cursors_are_a_clear_400(cursor):
    with pytest.raises(BadRequest) as caught:
        decode_cursor(cursor)
    assert caught.value.code == "invalid_cursor" and caught.value.status == 400
