"""Calls the receiver makes to providers (submit, poll): one place for timeouts and refusals."""

from __future__ import annotations

import httpx

from receiver.errors import ProviderError
from receiver.providers._request import ProviderRequest, refusal_message
from receiver.runtime import Runtime


async def send(runtime: Runtime, provider: str, request: ProviderRequest, *, timeout: float) -> httpx.Response:
    """Send `request` to `provider`'s base URL; a timeout or network error is a ProviderError without status."""
    url = runtime.settings.base_url(provider) + request.path
    try:
        return await runtime.http.request(request.method, url, headers=request.headers, json=request.json, timeout=timeout)
    except httpx.TimeoutException:
        raise ProviderError(f"{provider} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"cannot reach {provider}: {type(exc).__name__}: {exc}") from None


async def call(runtime: Runtime, provider: str, request: ProviderRequest, *, timeout: float) -> httpx.Response:
    """`send`, and any non-2xx answer is a ProviderError with the provider's status and message."""
    response = await send(runtime, provider, request, timeout=timeout)
    if not response.is_success:
        raise ProviderError(refusal_message(response.status_code, response.content), status=response.status_code)
    return response
