from __future__ import annotations

import errno

import pytest
import rados
import rbd

from robin.ceph.errors import (
    CephAlreadyExists,
    CephBusy,
    CephError,
    CephHasSnapshots,
    CephNotFound,
    CephUnavailable,
    translated,
)


@pytest.mark.parametrize("raised, expected, status", [
    (rbd.ImageNotFound("x", errno=errno.ENOENT), CephNotFound, 404),
    (rbd.ImageExists("x", errno=errno.EEXIST), CephAlreadyExists, 409),
    (rbd.ImageBusy("x", errno=errno.EBUSY), CephBusy, 409),
    (rbd.ImageHasSnapshots("x", errno=errno.ENOTEMPTY), CephHasSnapshots, 409),
    (rados.TimedOut("x", errno=-errno.ETIMEDOUT), CephUnavailable, 503),
    (rados.Error("no errno"), CephError, 502),
])
def test_binding_errors_are_translated_with_errno(raised, expected, status):
    with pytest.raises(expected) as caught, translated("doing a thing"):
        raise raised
    assert type(caught.value) is expected and caught.value.status == status
    assert caught.value.message.startswith("doing a thing")
    if getattr(raised, "errno", None):
        assert caught.value.errno == abs(raised.errno)
