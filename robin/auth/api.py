"""/api/v2/tokens: API tokens made, listed and revoked over the API, by admins only (a token that may make tokens
may make an admin one)."""
from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from robin.auth import service
from robin.auth.models import Role
from robin.auth.schemas import TokenCreatedSchema, TokenCreateSchema, TokenPageSchema, TokenSchema
from robin.schemas import PageArgs

blp = Blueprint("tokens", __name__, url_prefix="/api/v2/tokens",
                description="API tokens (admins): the secret is answered once, when the token is made")


@blp.route("")
class Tokens(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, TokenPageSchema)
    def get(self, args):
        """Every token, oldest first: id, name, role, project, prefix and dates; never a secret."""
        g.identity.require_admin()
        page = service.token_page(args["limit"], args["cursor"])
        return {"items": page.items, "next_cursor": page.next_cursor}

    @blp.arguments(TokenCreateSchema)
    @blp.response(201, TokenCreatedSchema)
    def post(self, body):
        """Make a token; its secret is in this answer and nowhere else (audited without it)."""
        g.identity.require_admin()
        expires_in = service.parse_lifetime(body["expires_in"]) if "expires_in" in body else None
        secret, token = service.create_token(Role(body["role"]), project=body.get("project"), name=body["name"],
                                             expires_in=expires_in)
        return {**service.token_detail(token.id), "secret": secret}


def _token_id(text: str) -> int:
    """The id in the URL; anything but digits is no token's id either (404, as an unknown number is)."""
    if not (text.isascii() and text.isdigit()):
        raise service.no_such_token(text)
    return int(text)


@blp.route("/<token_id>")
class TokenItem(MethodView):
    @blp.response(200, TokenSchema)
    def get(self, token_id):
        """The token: what the listing says of it."""
        g.identity.require_admin()
        return service.token_detail(_token_id(token_id))

    @blp.response(204)
    def delete(self, token_id):
        """Revoke the token (again: nothing changes) and end the dashboard sessions opened with it; answered once
        no worker or replica takes it any more."""
        g.identity.require_admin()
        service.revoke_everywhere(_token_id(token_id))
