"""The web console: runs, a run's timeline, the approvals inbox, reports, and a JSON API.

``create_app(store, tokens={...})`` returns a FastAPI (ASGI) app; serve it with uvicorn or
``threshold ui``. Needs the ``web`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from threshold.errors import MissingExtraError

if TYPE_CHECKING:
    from threshold.web._app import create_app
else:

    def create_app(*args: Any, **kwargs: Any) -> Any:
        """See ``threshold.web._app.create_app`` (imported here so a missing extra fails
        with the install line, not at ``import threshold.web``)."""
        try:
            from threshold.web._app import create_app as build
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in (
                    "fastapi", "starlette", "jinja2", "multipart", "python_multipart"):
                raise MissingExtraError("web", exc.name) from exc
            raise
        return build(*args, **kwargs)


__all__ = ["create_app"]
