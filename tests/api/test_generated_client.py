"""A client generated from robin's OpenAPI document by a real generator (openapi-python-client, from the [dev]
extras) works against a real `robin serve`: the generator takes the document without a warning, with no network,
and the client it writes lists projects and creates and reads back an RBD image, and reads robin's errors."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import unique

pytestmark = pytest.mark.integration
PACKAGE = "robin_generated_client"
MiB = 2**20


def no_network() -> list[str]:
    """A command prefix that runs the generator in a network namespace of its own, with no way out, where this
    machine allows one (root); elsewhere nothing."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True).returncode == 0:
        return [unshare, "--net"]
    return []


@pytest.fixture(scope="module")
def client_package(robin_url, tmp_path_factory):
    """The package openapi-python-client writes from the document robin serves, imported from a temp dir."""
    generator = Path(sys.executable).with_name("openapi-python-client")
    assert generator.exists(), "openapi-python-client is missing: `make test` installs it ([dev] extras)"
    workdir = tmp_path_factory.mktemp("generated-client")
    document = workdir / "openapi.json"
    document.write_bytes(requests.get(f"{robin_url}/api/v2/openapi.json", timeout=30).content)
    # Its formatting hooks (ruff) come from the same venv.
    env = {**os.environ, "PATH": f"{generator.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([*no_network(), str(generator), "generate", "--path", str(document), "--meta", "none",
                           "--output-path", str(workdir / PACKAGE)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Warning" not in output and "Error" not in output, output
    sys.path.insert(0, str(workdir))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture()
def client(client_package, robin_url, admin_token):
    with client_package.AuthenticatedClient(base_url=robin_url, token=admin_token, timeout=60.0) as authenticated:
        yield authenticated


def every_project(client) -> list[str]:
    """Project names over every page, as a script with the generated client would walk them."""
    list_projects = importlib.import_module(f"{PACKAGE}.api.projects.list_projects")
    names, cursor = [], None
    while True:
        page = list_projects.sync(client=client, limit=100, cursor=cursor)
        names += [project.name for project in page.items]
        if not page.next_cursor:
            return names
        cursor = page.next_cursor


def test_the_generated_client_lists_projects_and_creates_and_reads_an_rbd_image(client):
    models = importlib.import_module(f"{PACKAGE}.models")
    create_project = importlib.import_module(f"{PACKAGE}.api.projects.create_project")
    create_image = importlib.import_module(f"{PACKAGE}.api.rbd_images.create_project_rbd_image")
    get_image = importlib.import_module(f"{PACKAGE}.api.rbd_images.get_project_rbd_image")

    project = unique("gen")
    quota = models.Quota(max_bytes=256 * MiB, max_volumes=2, max_snapshots=2)
    created_project = create_project.sync(client=client, body=models.ProjectCreate(name=project, quota=quota))
    assert isinstance(created_project, models.Project) and created_project.name == project
    assert project in every_project(client)

    name = unique("img")
    created = create_image.sync(project, client=client, body=models.RbdImageCreate(name=name, size_bytes=64 * MiB))
    assert isinstance(created, models.RbdImage), created
    image = get_image.sync(project, name, client=client)
    assert isinstance(image, models.RbdImage)
    assert (image.name, image.size_bytes, image.state, image.id) == (name, 64 * MiB, "available", created.id)


def test_the_generated_client_reads_robins_errors(client):
    models = importlib.import_module(f"{PACKAGE}.models")
    get_project = importlib.import_module(f"{PACKAGE}.api.projects.get_project")
    create_image = importlib.import_module(f"{PACKAGE}.api.rbd_images.create_project_rbd_image")

    missing = get_project.sync_detailed(unique("absent"), client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.Error)
    assert missing.parsed.error.code == "project_not_found"
    negative = create_image.sync_detailed(unique("absent"), client=client,
                                         body=models.RbdImageCreate(name=unique("img"), size_bytes=-1))
    assert negative.status_code == 422 and negative.parsed.error.code == "validation_error"
