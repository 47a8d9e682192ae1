"""Secrets in URLs: masked wherever medcl prints or saves one, refused where they do not belong.

A URL may carry a secret in two places: the password of its user info
(``postgresql://user:PASSWORD@host/db``, ``s3://KEY_ID:SECRET@bucket/...``) and the value of a query
parameter named like a secret (``?password=...``, ``X-Amz-Signature=...``, ``sig=``, ``token=``...).

* :func:`mask_url_password` replaces each with :data:`MASK` (``***``, as SQLAlchemy's
  ``URL.render_as_string(hide_password=True)``); the user name, host, port and path stay, so a
  masked URL still says which database or bucket is meant. An environment reference
  (``${MEDCL_DB_PASSWORD}``, see :func:`expand_env_refs`) is no secret and stays as written.
* :func:`mask_secrets` does the same for every URL inside a free text (an error message, a log
  line); :func:`mask_tree` for every string of a config tree before it is saved.
* :func:`expand_env_refs` substitutes ``${NAME}`` from the environment at the moment a URL is used,
  so a sweep file (and the ``sweep.yaml`` medcl saves from it) can name the password without
  holding it: ``storage: postgresql://medcl:${MEDCL_DB_PASSWORD}@db.internal/optuna``.
* :func:`has_masked_password` tells a URL whose password is the mask (a copy saved by medcl, given
  back as input), which can only fail to log in.
* :func:`credentials_in_uri` names the secret part of an object-store URI: object stores take
  their credentials from the environment of each process (``AWS_*``...), never from a URI that
  would be written into ``config.yaml``, Ray Train's state and the logs.

The user-info rule follows SQLAlchemy's URL pattern (``name://user[:password]@host...``, the user
name without ``:``, ``/`` or ``@``); the password is taken up to the *last* ``@`` of the URL, so
an unescaped ``@`` in a password is masked too (over-masking a path is harmless, leaking is not).
"""
from __future__ import annotations

import os
import re

from medcl.errors import MedclError

MASK = "***"


class SecretError(MedclError, ValueError):
    """A URL's secret cannot be used as given (an unset ``${NAME}``, a masked copy, a URI that
    would carry a credential into saved files); the message names the field and never the secret."""

# scheme://user:password@  (password greedy to the last "@" of the token)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s?#'\"]*:)(?P<password>[^\s'\"]*)@")
# ?name=value or &name=value where name looks like a secret
_SECRET_PARAM = re.compile(
    r"(?P<head>[?&;](?:[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|signature|credential|sig)"
    r"|(?:[A-Za-z0-9_.\-]*[_\-])?(?:access_?key|api_?key|key))=)(?P<value>[^&;#\s'\"]*)",
    re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")
_URL_TOKEN = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]+")


def _is_env_ref(value: str) -> bool:
    return bool(_ENV_REF.fullmatch(value))


def mask_url_password(url: str) -> str:
    """``url`` with the password of its user info and the values of secret-looking query
    parameters replaced by :data:`MASK` (``None`` and non-URLs are returned unchanged)."""
    if not isinstance(url, str) or "://" not in url:
        return url

    def password(match: re.Match) -> str:
        secret = match.group("password")
        return match.group(0) if _is_env_ref(secret) or not secret else f"{match.group('head')}{MASK}@"

    def param(match: re.Match) -> str:
        value = match.group("value")
        return match.group(0) if _is_env_ref(value) or not value else f"{match.group('head')}{MASK}"

    return _SECRET_PARAM.sub(param, _USERINFO.sub(password, url))


def mask_secrets(text: str) -> str:
    """Every URL inside ``text`` (an error message, a log line) through :func:`mask_url_password`."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return _URL_TOKEN.sub(lambda m: mask_url_password(m.group(0)), text)


def mask_tree(value):
    """A copy of a YAML/JSON-like tree (dicts, lists, strings) with :func:`mask_secrets` applied to
    every string: what a saved config dump goes through."""
    if isinstance(value, dict):
        return {k: mask_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_tree(v) for v in value]
    return mask_secrets(value) if isinstance(value, str) else value


def has_masked_password(url: str | None) -> bool:
    """True when ``url``'s password (or a secret query value) is :data:`MASK`: a saved, masked copy."""
    if not isinstance(url, str):
        return False
    match = _USERINFO.search(url)
    if match and match.group("password") == MASK:
        return True
    return any(m.group("value") == MASK for m in _SECRET_PARAM.finditer(url))


def expand_env_refs(url: str, *, field: str) -> str:
    """``url`` with every ``${NAME}`` replaced by the environment variable ``NAME`` (read now, in
    the process that opens the URL). Raises :class:`SecretError` naming ``field`` and the variable
    when it is not set. Only the braced form is expanded, so a literal ``$`` in a password stays."""

    def value(match: re.Match) -> str:
        name = match.group("name")
        if name not in os.environ:
            raise SecretError(f"{field}: {mask_url_password(url)} refers to ${{{name}}}, which is not set in the "
                             f"environment; export {name}=... before running medcl")
        return os.environ[name]

    return _ENV_REF.sub(value, url)


def credentials_in_uri(uri: str) -> str | None:
    """The secret part of ``uri`` (``'a password'``, ``'a secret query parameter'``) or None."""
    if not isinstance(uri, str) or "://" not in uri:
        return None
    match = _USERINFO.search(uri)
    if match and match.group("password"):
        return "a password (user:SECRET@)"
    if any(m.group("value") for m in _SECRET_PARAM.finditer(uri)):
        return "a secret query parameter"
    return None


__all__ = ["MASK", "SecretError", "mask_url_password", "mask_secrets", "mask_tree", "has_masked_password", "expand_env_refs",
           "credentials_in_uri"]
