"""Provider errors as a run shows them: which provider, what happened, what to fix,
and never the key."""

from __future__ import annotations

from typing import Any

from termjobs.runners.llm.settings import ProviderConfig

REDACTED = "[redacted]"


class ProviderError(Exception):
    """A provider call failed; the message is ready for the run's ``error``."""


def scrub(text: str, key: str | None) -> str:
    """``text`` without the key (a provider may echo it back in an error)."""
    if key and len(key) >= 4:
        text = text.replace(key, REDACTED)
    return text


def missing_key(config: ProviderConfig) -> ProviderError:
    """The provider's key variable is not set in the server's environment."""
    return ProviderError(
        f'provider "{config.name}": the environment variable {config.api_key_env} is not set; '
        f"export {config.api_key_env} in the environment of term-llm serve and restart it"
    )


def missing_package(config: ProviderConfig, package: str) -> ProviderError:
    return ProviderError(
        f'provider "{config.name}": the {package} package is not installed on this server; '
        f"reinstall termjobs (it depends on {package}): pip install -e ."
    )


def status_error(
    config: ProviderConfig, model: str, key: str | None, status: int, body: Any, fallback: str
) -> ProviderError:
    """An HTTP error the SDK gave up on (after its retries, for 429 and 5xx)."""
    detail = _body_message(body) or fallback
    head = f'provider "{config.name}": {status} {detail}'.rstrip()
    if status in (401, 403):
        hint = (
            f"check the key in ${config.api_key_env}"
            if config.api_key_env
            else "this provider needs a key: set api_key_env in its configuration"
        )
    elif status == 404:
        hint = f'check the model name (model "{model}") and base_url ({config.endpoint})'
    elif status == 429:
        hint = f"still rate-limited after {config.max_retries} retries; try later or raise max_retries"
    elif status >= 500:
        hint = f"the provider failed (after {config.max_retries} retries); try again later"
    else:
        hint = ""
    return ProviderError(scrub(f"{head}; {hint}" if hint else head, key))


def connection_error(
    config: ProviderConfig, key: str | None, *, timed_out: bool, cause: str = ""
) -> ProviderError:
    """The endpoint could not be reached, or did not answer in time."""
    if timed_out:
        text = (
            f'provider "{config.name}": no answer from {config.endpoint} within {config.timeout:g}s; '
            "check the server, or raise the provider's timeout"
        )
    else:
        reason = f" ({cause})" if cause else ""
        text = (
            f'provider "{config.name}": cannot reach {config.endpoint}{reason}; '
            "is the server running and is base_url right?"
        )
    return ProviderError(scrub(text, key))


def other_error(config: ProviderConfig, key: str | None, exc: BaseException) -> ProviderError:
    return ProviderError(scrub(f'provider "{config.name}": {exc}', key))


def _body_message(body: Any) -> str:
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str):
        return body[:500]
    return ""
