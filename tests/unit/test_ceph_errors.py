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
    CephInvalidArgument,
    CephNoSpace,
    CephNotAuthorized,
    CephNotConnected,
    CephNotFound,
    CephPermissionDenied,
    CephUnavailable,
    translated,
)
from robin.errors import RobinError, api_error


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
    assert type(caught.value) is expected and api_error(caught.value).status == status
    assert caught.value.message.startswith("doing a thing")
    if getattr(raised, "errno", None):
        assert caught.value.errno == abs(raised.errno)


@pytest.mark.parametrize("raised, status, code", [
    (CephNotFound("gone"), 404, "ceph_not_found"),
    (CephAlreadyExists("taken"), 409, "ceph_already_exists"),
    (CephBusy("in use"), 409, "ceph_busy"),
    (CephHasSnapshots("has some"), 409, "ceph_has_snapshots"),
    (CephInvalidArgument("bad"), 422, "ceph_invalid_argument"),
    (CephNoSpace("full"), 507, "ceph_no_space"),
    (CephPermissionDenied("no caps"), 502, "ceph_permission_denied"),
    (CephUnavailable("no answer"), 503, "ceph_unavailable"),
    (CephNotConnected("no connection"), 503, "ceph_unavailable"),
    (CephNotAuthorized("user refused"), 502, "ceph_permission_denied"),
    (CephError("other"), 502, "ceph_error"),
])
def test_ceph_errors_answer_through_the_one_table(raised, status, code):
    raised.details["errno"] = 5
    answer = api_error(raised)
    assert (answer.status, answer.code, answer.message, answer.details) == (status, code, raised.message, {"errno": 5})


def test_ceph_errors_know_no_http():
    error = CephNotFound("gone", errno=errno.ENOENT, operation="rbd.open", target="ceph")
    assert not isinstance(error, RobinError)
    assert not hasattr(error, "status") and not hasattr(error, "code")
    assert (error.errno, error.operation, error.target) == (errno.ENOENT, "rbd.open", "ceph")


def test_a_check_inside_a_call_is_told_where_it_ran():
    with pytest.raises(CephBusy) as caught, translated("moving", operation="rbd.trash_move", target="ceph"):
        raise CephBusy("in use")
    assert (caught.value.operation, caught.value.target) == ("rbd.trash_move", "ceph")
