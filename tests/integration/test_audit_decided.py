"""A request's audit row gets its final status in the commit that decides it (the state machine's second commit,
after the Ceph call succeeded): no transaction of its own after the response, unless the response says otherwise,
and then the row is corrected to what the client was answered."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from robin.audit.models import AuditEvent
from robin.db import Direct, Pipelined, db
from robin.volumes.models import RbdImage, VolumeState
from tests.conftest import unique
from tests.support.triggers import row_trigger

pytestmark = pytest.mark.integration
GiB = 2**30


def events_of(db_rows, request_id: str) -> list[AuditEvent]:
    return db_rows(select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.id))


@contextmanager
def commits() -> Iterator[list[int]]:
    """Counts the API's committed transactions while the block runs: the engine's commits, and the second commits
    (db.compare_and_set) that SQLAlchemy's commit event does not see: sent whole in one pipeline on PostgreSQL, run on
    the driver's connection on SQLite."""
    counted: list[int] = []

    def on_commit(_conn):
        counted.append(1)

    def counting(commit):
        def counted_commit(transaction):
            commit(transaction)
            counted.append(1)
        return counted_commit

    originals = {kind: kind.commit for kind in (Pipelined, Direct)}
    event.listen(db.engine, "commit", on_commit)
    for kind, commit in originals.items():
        kind.commit = counting(commit)
    try:
        yield counted
    finally:
        for kind, commit in originals.items():
            kind.commit = commit
        event.remove(db.engine, "commit", on_commit)


def resize_result_lost(image: str):
    """A real trigger that makes the database skip the update recording the image's resize (as a concurrent
    request that moved the row first would): the decisive commit commits, the request answers 409."""
    return row_trigger("lose_" + image, "UPDATE", "rbd_images",
                       f"OLD.name = '{image}' AND OLD.state = 'resizing' AND NEW.state = 'available'")


def test_a_success_is_audited_in_the_commit_that_decides_it(admin, new_project, db_rows):
    project, image, request_id = new_project(), unique("i"), unique("create")
    with commits() as committed:
        response = admin.post(f"/api/v2/projects/{project}/rbd-images", json={"name": image, "size_bytes": GiB},
                              headers={"X-Request-Id": request_id})
    assert response.status_code == 201, response.json
    assert len(committed) == 2  # `creating` with the pending row; `available` with its final status
    [row] = events_of(db_rows, request_id)
    assert (row.outcome, row.status_code, row.error_code, row.project) == ("success", 201, None, project)
    delete_id = unique("delete")
    with commits() as committed:
        assert admin.delete(f"/api/v2/projects/{project}/rbd-images/{image}?purge=true",
                            headers={"X-Request-Id": delete_id}).status_code == 204
    assert len(committed) == 2
    [row] = events_of(db_rows, delete_id)
    assert (row.outcome, row.status_code) == ("success", 204)


def test_a_response_that_fails_after_the_decisive_commit_corrects_the_row(app, admin, new_project, db_rows):
    from robin.reconcile.service import reconcile

    project, image, request_id = new_project(), unique("i"), unique("resize")
    images = f"/api/v2/projects/{project}/rbd-images"
    assert admin.post(images, json={"name": image, "size_bytes": GiB}).status_code == 201
    try:
        with resize_result_lost(image):
            response = admin.patch(f"{images}/{image}", json={"size_bytes": 2 * GiB},
                                   headers={"X-Request-Id": request_id})
        assert response.status_code == 409 and response.json["error"]["code"] == "state_changed", response.json
        [row] = events_of(db_rows, request_id)
        assert (row.outcome, row.status_code, row.error_code) == ("failure", 409, "state_changed")
        [volume] = db_rows(select(RbdImage).where(RbdImage.name == image))
        assert volume.state is VolumeState.RESIZING  # what the reconciler finishes
    finally:
        with app.app_context():
            reconcile(older_than=timedelta(0))
        assert admin.delete(f"{images}/{image}?purge=true").status_code == 204
