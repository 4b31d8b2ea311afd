"""Serving the JS client (``window.yipit.event``) and the ``<script>`` tag that loads it.

``serve_script`` is the ``eventlib.script`` view of the extension's blueprint, whose module
registers it (and imports this one); :func:`eventlib_script` is a Jinja global of every app whose
endpoint is registered.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from flask import Response, current_app, request, url_for
from markupsafe import Markup, escape

#: The JS client's minified build (``window.yipit.event``), made from ``js/`` by ``npm run build``
#: and served at ``<EVENTLIB_URL_PREFIX>/eventlib.js``.
SCRIPT_PATH = Path(__file__).resolve().parent / "static" / "eventlib.js"

# The endpoints of the extension's blueprint ("eventlib"), by name: its module imports this one.
_LOG_ENDPOINT = "eventlib.log"
_SCRIPT_ENDPOINT = "eventlib.script"


def serve_script() -> Response:
    """The JS client, which defines ``window.yipit.event``.

    Cached for a year (``immutable``) under the URL :func:`eventlib_script` renders, whose ``?v=``
    is the file's hash, so a new version is fetched as soon as pages link to it; under any other
    URL, cached for a day and revalidated with its ``ETag``.
    """
    data, version = _script()
    response = current_app.response_class(data, mimetype="text/javascript")
    response.set_etag(version)
    response.cache_control.public = True
    if request.args.get("v") == version:
        response.cache_control.max_age = 365 * 86400
        response.cache_control.immutable = True
    else:
        response.cache_control.max_age = 86400
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.make_conditional(request)  # 304 for a matching If-None-Match, in place
    return response


def eventlib_script(endpoint: str | None = None, **attributes: str | bool | None) -> Markup:
    """The ``<script>`` tag of the JS client, for templates: ``{{ eventlib_script() }}``.

    Renders ``<script src="/event/eventlib.js?v=<hash>" data-endpoint="/event/log"></script>``;
    after it, page scripts can call ``yipit.event.log(name, data)``. A Jinja global of every app
    whose endpoint is registered (``EVENTLIB_HTTP_ENABLED``).

    :param endpoint: the URL the client posts events to; default the blueprint's ``/event/log``
        (under ``EVENTLIB_URL_PREFIX``).
    :param attributes: more attributes of the tag, e.g. ``nonce=csp_nonce`` or ``defer=True`` (then
        page scripts that log at load time must be deferred too); ``True`` renders the bare name,
        ``False`` and ``None`` leave it out, and ``_`` in a name becomes ``-``.
    """
    _, version = _script()
    attrs: dict[str, str | bool | None] = {
        "src": url_for(_SCRIPT_ENDPOINT, v=version),
        "data-endpoint": endpoint if endpoint is not None else url_for(_LOG_ENDPOINT),
    }
    attrs.update({name.replace("_", "-"): value for name, value in attributes.items()})
    rendered = "".join(
        f" {escape(name)}" if value is True else f' {escape(name)}="{escape(value)}"'
        for name, value in attrs.items()
        if value is not None and value is not False
    )
    return Markup(f"<script{rendered}></script>")


def _script() -> tuple[bytes, str]:
    """The client's bytes and version (a hash of them), read again only when the file changed."""
    stat = SCRIPT_PATH.stat()
    return _read_script(stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_script(mtime_ns: int, size: int) -> tuple[bytes, str]:
    data = SCRIPT_PATH.read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:16]
