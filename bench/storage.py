"""Optuna storages as nnbench names, opens and shows them.

One place for what a storage URL means: a path is a journal file (the embedded default), a URL
with a scheme is an SQLAlchemy database URL. Whenever a URL is shown (errors, summaries, the
report) it goes through `display_url`, which masks the password.
"""

from __future__ import annotations

DEFAULT_STORAGE = "results/optuna.journal"


def display_url(url: str | None) -> str:
    """The storage as the user gave it, with any password masked (`***`); the default when None.

    SQLAlchemy parses the URL (`URL.render_as_string(hide_password=True)`); a journal path is
    shown as is. A URL SQLAlchemy cannot parse is shown without its user-info part, since it may
    still hold a password.
    """
    if url is None:
        return DEFAULT_STORAGE
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: drop everything between the scheme and the host
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if "@" in rest else url
