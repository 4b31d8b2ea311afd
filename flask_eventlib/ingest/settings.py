"""The ingest's settings, read and checked once from an app's config: Flask-free."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limits import parse_many
from limits.errors import ConfigurationError as LimitsConfigurationError

from .. import config
from ..exceptions import ConfigurationError
from .guards import RateLimit, normalise_origin


@dataclass(frozen=True)
class HttpSettings:
    """An app's ingest settings, read once by :func:`settings_from_config`."""

    max_batch: int
    max_content_length: int
    #: Normalised origins (``scheme://host[:port]``) allowed besides the app's own.
    allowed_origins: frozenset[str]
    #: The rate limit of this endpoint; ``None`` when unlimited.
    limiter: RateLimit | None
    #: Where the blueprint is mounted (``EVENTLIB_URL_PREFIX``); ``""`` for the root.
    url_prefix: str = ""
    #: Answer the endpoint through Flask's dispatch rather than at the front door
    #: (``EVENTLIB_HTTP_THROUGH_FLASK``).
    through_flask: bool = False


def settings_from_config(conf: Mapping[str, Any]) -> HttpSettings:
    """The ingest's settings in ``conf`` (an app's config, with the ``EVENTLIB_*`` defaults set).

    :raises ConfigurationError: for an invalid prefix, origin, limit or storage URL.
    """
    prefix = conf[config.URL_PREFIX] or ""
    if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
        raise ConfigurationError(f"{config.URL_PREFIX} must be a path starting with '/', e.g. '/event', not {prefix!r}")
    origins = conf[config.ALLOWED_ORIGINS] or []
    if not isinstance(origins, list | tuple | set | frozenset) or not all(isinstance(o, str) for o in origins):
        raise ConfigurationError(
            f"{config.ALLOWED_ORIGINS} must be a list of origins, e.g. ['https://www.example.com'], not {origins!r}"
        )
    allowed = set()
    for origin in origins:
        normalised = normalise_origin(origin, strict=True)
        if normalised is None:
            raise ConfigurationError(
                f"{origin!r} in {config.ALLOWED_ORIGINS} is not an origin: write scheme://host[:port] "
                "with no path and no wildcard, e.g. 'https://www.example.com' (list each origin)"
            )
        allowed.add(normalised)
    return HttpSettings(
        max_batch=_positive(conf, config.MAX_BATCH),
        max_content_length=_positive(conf, config.MAX_CONTENT_LENGTH),
        allowed_origins=frozenset(allowed),
        limiter=_create_limiter(conf),
        url_prefix=prefix,
        through_flask=bool(conf[config.HTTP_THROUGH_FLASK]),
    )


def _positive(conf: Mapping[str, Any], key: str) -> int:
    value = conf[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be a positive integer, not {value!r}")
    return value


def _create_limiter(conf: Mapping[str, Any]) -> RateLimit | None:
    """The endpoint's rate limit, or ``None`` when ``EVENTLIB_RATE_LIMIT`` is off."""
    rate = conf[config.RATE_LIMIT]
    if not rate:
        return None
    url = conf[config.RATE_LIMIT_STORAGE_URL] or "memory://"
    try:
        parse_many(rate)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{config.RATE_LIMIT}={rate!r} is not a rate limit: write e.g. '120/minute' or '10/second;500/hour', "
            "or None for no limit."
        ) from exc
    try:
        return RateLimit(rate, url)
    except (LimitsConfigurationError, ValueError) as exc:
        raise ConfigurationError(
            f"{config.RATE_LIMIT_STORAGE_URL}={url!r} cannot hold the rate limit: {exc}. Use 'memory://' "
            "or 'redis://host:6379/0'."
        ) from exc
