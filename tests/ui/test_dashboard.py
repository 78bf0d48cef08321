"""The dashboard at /ui/: its session auth with the Flask test client, and the page in a real headless Chromium."""
from __future__ import annotations

import re
import struct
import zlib

import pytest
import requests

from tests.conftest import make_token, unique
from tests.support.browser import VIEWPORT, chromium

MiB = 2**20


def csrf_token(page: bytes) -> str:
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, "the form carries no CSRF token"
    return match.group(1).decode()


def log_in(client, token: str, base_url: str = "http://localhost"):
    form = client.get("/ui/login", base_url=base_url)
    return client.post("/ui/login", data={"token": token, "csrf_token": csrf_token(form.data)}, base_url=base_url)


def log_out(client):
    return client.post("/ui/logout", data={"csrf_token": csrf_token(client.get("/ui/").data)}, follow_redirects=True)


def session_cookie(app, client) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None, "no session cookie"
    return cookie.value


def logged_in_auditor(app):
    """A test client logged in to the dashboard with a new auditor token, and that token's id."""
    from robin.auth.service import identity_for_secret

    token = make_token(app, "auditor")
    client = app.test_client()
    log_in(client, token)
    assert client.get("/ui/").status_code == 200
    with app.app_context():
        return client, identity_for_secret(token).token_id


def session_rows(db_rows, token_id: int) -> list:
    from sqlalchemy import select

    from robin.auth.models import DashboardSession

    return db_rows(select(DashboardSession).where(DashboardSession.token_id == token_id))


# --- session auth (Flask test client) --------------------------------------------------------------

def test_without_a_session_every_page_sends_to_login(app):
    client = app.test_client()
    response = client.get("/ui/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/login")
    assert client.get("/ui/drift").status_code == 401
    login = client.get("/ui/login")
    assert login.status_code == 200 and b'name="token"' in login.data
    assert "default-src 'self'" in login.headers["Content-Security-Policy"]


def test_a_bad_token_is_refused_with_a_message(app):
    client = app.test_client()
    response = log_in(client, "robin_not-a-token")
    assert response.status_code == 401 and b"unknown or revoked" in response.data
    assert "session=" not in response.headers.get("Set-Cookie", "")
    assert client.get("/ui/").status_code == 302


def test_the_session_cookie_is_httponly_and_samesite_lax(app, admin_token, new_project):
    project = new_project()
    client = app.test_client()
    response = log_in(client, admin_token)
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    page = client.get("/ui/")
    assert page.status_code == 200 and project.encode() in page.data and b"Recent audit events" in page.data
    assert page.headers["Cache-Control"] == "no-store"


def test_dashboard_cookie_holds_a_session_id_not_the_token(app, admin_token, db_rows):
    """Attack 7: the cookie carried the raw bearer token (signed, not encrypted, no expiry, never Secure)."""
    from robin.auth.service import identity_for_secret

    client = app.test_client()
    response = log_in(client, admin_token, base_url="https://localhost")
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]  # served over HTTPS
    value = session_cookie(app, client)
    content = app.session_interface.get_signing_serializer(app).loads(value)
    assert admin_token not in value and admin_token not in repr(content)
    assert admin_token[len("robin_"):] not in repr(content)
    with app.app_context():
        token_id = identity_for_secret(admin_token).token_id
    rows = session_rows(db_rows, token_id)
    # Stored hashed: the cookie's session id is not in the table either.
    assert rows and all(content["sid"] not in repr(vars(row)) for row in rows)
    assert all(row.expires_at > row.created_at for row in rows)


def test_dashboard_session_ends_server_side_on_logout(app, admin_token):
    client = app.test_client()
    log_in(client, admin_token)
    stolen = session_cookie(app, client)
    assert b"logged out" in log_out(client).data
    replay = app.test_client()
    replay.set_cookie(app.config["SESSION_COOKIE_NAME"], stolen)
    response = replay.get("/ui/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/ui/login")


def test_dashboard_session_expires(app, db_rows):
    from sqlalchemy import update

    from robin.auth.models import DashboardSession
    from robin.db import db, utcnow

    client, token_id = logged_in_auditor(app)
    with db.writing() as connection:
        connection.execute(update(DashboardSession).where(DashboardSession.token_id == token_id)
                           .values(expires_at=utcnow()))
    response = client.get("/ui/", follow_redirects=True)
    assert response.request.path == "/ui/login" and b"expired" in response.data


def test_login_without_a_valid_csrf_token_is_refused(app, admin_token, db_rows):
    from robin.auth.service import identity_for_secret

    with app.app_context():
        token_id = identity_for_secret(admin_token).token_id
    before = len(session_rows(db_rows, token_id))
    client = app.test_client()
    client.get("/ui/login")
    for form in ({"token": admin_token}, {"token": admin_token, "csrf_token": "forged"}):
        response = client.post("/ui/login", data=form)
        assert response.status_code == 400 and b"reload the page" in response.data
        assert client.get("/ui/").status_code == 302
    assert len(session_rows(db_rows, token_id)) == before
    # Nor does logging out work without it: a forged form cannot end someone's session.
    log_in(client, admin_token)
    assert client.post("/ui/logout", data={}).status_code == 400
    assert client.get("/ui/").status_code == 200


def test_a_member_sees_only_its_project(app, new_project):
    mine, other = new_project(), new_project()
    client = app.test_client()
    assert log_in(client, make_token(app, "member", mine)).status_code == 302
    page = client.get("/ui/").data.decode()
    assert f'data-project="{mine}"' in page and other not in page
    assert "shown to auditors and admins" in client.get("/ui/drift").data.decode()


def test_an_auditor_sees_the_drift_fragment(app, new_project):
    client = app.test_client()
    log_in(client, make_token(app, "auditor"))
    fragment = client.get("/ui/drift")
    assert fragment.status_code == 200
    assert b"drift-findings" in fragment.data or b"No drift" in fragment.data or b"survey" in fragment.data


def test_a_revoked_token_ends_the_session(app, db_rows):
    from robin.auth.service import revoke_token

    client, token_id = logged_in_auditor(app)
    with app.app_context():
        revoke_token(token_id)
    assert session_rows(db_rows, token_id) == []
    response = client.get("/ui/", follow_redirects=True)
    assert response.request.path == "/ui/login" and b"log in again" in response.data


def test_logins_are_audited_without_the_token(app, db_rows):
    from sqlalchemy import select

    from robin.audit.models import AuditEvent

    token = make_token(app, "auditor")
    log_in(app.test_client(), token)
    event = db_rows(select(AuditEvent).where(AuditEvent.target == "/ui/login").order_by(AuditEvent.id.desc()))[0]
    assert event.actor.endswith(":test-auditor") and event.outcome == "success"
    assert token not in repr(event.details)


def test_logout_clears_the_session(app, admin_token):
    client = app.test_client()
    log_in(client, admin_token)
    assert b"logged out" in log_out(client).data
    assert client.get("/ui/").status_code == 302


# --- a real browser ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """Chromium, loopback only."""
    with chromium("robin-ui-chromium-") as context:
        # Anything but robin on 127.0.0.1 is refused.
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("http://127.0.0.1:")
                      else route.abort())
        yield context


def png_size_and_colours(data: bytes) -> tuple[int, int, int]:
    """Width, height and distinct colours of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunks.setdefault(kind, b"")
        chunks[kind] += data[position + 8:position + 8 + length]
        position += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour_type in (2, 6) and interlace == 0
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(chunks[b"IDAT"]), width * channels
    previous, colours = bytearray(stride), set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, upper_left = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else upper_left)) & 0xFF
        if row % 4 == 0:  # every fourth row is plenty to count colours
            colours.update(bytes(line[i:i + 3]) for i in range(0, stride, channels * 2))
        previous = line
    return width, height, len(colours)


def test_the_dashboard_in_headless_chromium(browser, app, robin_url, admin_token, new_project, tmp_path):
    from robin.audit import usage

    project = new_project(max_bytes=1024 * MiB)
    created = requests.post(f"{robin_url}/api/v2/projects/{project}/rbd-images", timeout=30,
                            headers={"Authorization": f"Bearer {admin_token}"},
                            json={"name": unique("img"), "size_bytes": 256 * MiB})
    assert created.status_code == 201, created.text
    with app.app_context():  # measured, so it is among the top consumers
        assert usage.refresh(volume_ids=[created.json()["id"]]).measured == 1
    page = browser.new_page()
    page.goto(f"{robin_url}/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("#token", admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{robin_url}/ui/")

    row = page.locator(f'tr[data-project="{project}"]')
    assert row.count() == 1

    def width(bar: str) -> float:
        return row.locator(f'[data-bar="{bar}"]').bounding_box()["width"]

    # Provisioned is a quarter of the quota, so its bar is a quarter of the quota's.
    assert width("quota") > 0 and abs(width("provisioned") / width("quota") - 0.25) < 0.02
    assert width("used") <= width("provisioned")
    assert page.locator("#top-consumers tbody tr").count() >= 1  # ours at least is measured

    page.wait_for_selector("#drift[data-loaded]", timeout=60_000)
    assert page.get_attribute("#drift", "data-loaded") == "true"
    assert "Loading" not in page.inner_text("#drift")
    assert page.locator("#events tbody tr").count() >= 1
    assert project in page.inner_text("#events")

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=False)
    print(f"dashboard screenshot: {shot}")
    width_px, height_px, colours = png_size_and_colours(shot.read_bytes())
    assert (width_px, height_px) == (VIEWPORT["width"], VIEWPORT["height"])
    assert colours > 8, "the screenshot looks blank"

    page.click("text=Log out")
    page.wait_for_url(f"{robin_url}/ui/login")
    assert "logged out" in page.inner_text("main")
    page.goto(f"{robin_url}/ui/")
    assert page.url.endswith("/ui/login")
    page.close()
