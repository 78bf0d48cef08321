"""robin's REST client (robin.client.rest), as the provisioner and the CSI shim use it, against robin served by
gunicorn: at a plain http:// URL it sends on its own kept-alive connections, else through its requests session, and
both ways give the same answers and the same errors."""
from __future__ import annotations

import pytest
import rbd

from robin.client import ClientConfig, RobinApiError, RobinClient
from tests.conftest import unique
from tests.support.net import free_port

MiB = 2**20


@pytest.fixture(params=["direct", "session"])
def client(request, robin_url, admin_token):
    robin = RobinClient(ClientConfig(url=robin_url, token=admin_token))
    assert robin._pool is not None  # plain http, no proxy: the direct way
    if request.param == "session":
        robin._pool = None  # the way https and proxies take
    yield robin
    robin.close()


def test_answers_and_errors_are_the_same_either_way(client, new_project, rbd_ioctx):
    project, name = new_project(), unique("img")
    created = client.create_volume("rbd", project, name, 64 * MiB, created_for="test:client")
    try:
        assert created["name"] == name and created["size_bytes"] == 64 * MiB and created["created_for"] == "test:client"
        assert name in rbd.RBD().list(rbd_ioctx)
        assert client.get_volume("rbd", project, name)["size_bytes"] == 64 * MiB
        with pytest.raises(RobinApiError) as taken:
            client.create_volume("rbd", project, name, 64 * MiB)
        assert taken.value.status == 409 and taken.value.code == "name_taken"
        with pytest.raises(RobinApiError) as invalid:
            client.create_volume("rbd", project, unique("img"), -1)
        assert invalid.value.status == 422 and "size_bytes" in invalid.value.explanation
        # query parameters: a page of one, then the next
        first = client.list_volumes("rbd", project, limit=1)
        assert [item["name"] for item in first["items"]] == [name] and first["next_cursor"] is None
    finally:
        assert client.delete_volume("rbd", project, name, purge=True) is None  # 204
    assert name not in rbd.RBD().list(rbd_ioctx)
    with pytest.raises(RobinApiError) as gone:
        client.get_volume("rbd", project, name)
    assert gone.value.status == 404 and gone.value.code == "volume_not_found"


@pytest.mark.parametrize("direct", [True, False])
def test_robin_not_answering_is_unreachable(direct):
    robin = RobinClient(ClientConfig(url=f"http://127.0.0.1:{free_port()}", token="t", connect_timeout=2))
    if not direct:
        robin._pool = None
    try:
        with pytest.raises(RobinApiError) as unreachable:
            robin.get_project("p")
        assert unreachable.value.status == 0 and unreachable.value.code == "unreachable"
    finally:
        robin.close()


def test_a_proxy_or_https_goes_through_the_session(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert RobinClient(ClientConfig(url="http://robin.example:8080", token="t"))._pool is None
    assert RobinClient(ClientConfig(url="https://robin.example", token="t"))._pool is None
    monkeypatch.setenv("NO_PROXY", "robin.example")
    assert RobinClient(ClientConfig(url="http://robin.example:8080", token="t"))._pool is not None
