"""`POST /v1/generations`: submit to a provider with the receiver's own webhook URL, then track the job(s).

Building the provider's request and reading its answer are pure (the adapters); this module does the I/O.
A job whose id the provider chooses is registered once it accepted; one whose id we choose (Runware's
taskUUID) before the submit, and removed again on a refusal: a refusal leaves no job behind. A provider
that answers synchronously (the registry says which: Lumenfall) is called in the background instead
(`lumenfall_calls`), its job registered first.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver import logs
from receiver.api.idempotency import fingerprint, idempotency_key, settle
from receiver.errors import InvalidPayload, ProviderError
from receiver.ingest import lumenfall_calls
from receiver.ingest.inbound import storable_text
from receiver.ingest.provider_calls import call
from receiver.models import IDEMPOTENCY_TTL_S, Job
from receiver.providers import REGISTRY, Provider
from receiver.providers._request import BadGeneration, GenerationSpec, ProviderRequest, Submitted
from receiver.runtime import Runtime
from receiver.settings import webhook_url
from receiver.web.http import error, read_body
from receiver.web.validation import CallbackUrl, ProviderName, invalid, parse_body

log = logging.getLogger("receiver.api.generations")


class Generate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    prompt: str = Field(min_length=1, max_length=20_000)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    input_image: str | None = Field(default=None, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    callback_url: CallbackUrl = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("input_image")
    @classmethod
    def _input_image(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if not (parts.scheme in ("http", "https") and parts.hostname) and parts.scheme != "data":
            raise ValueError("must be an http(s):// URL or a data: URI")
        return value


async def create_generation(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    settings = runtime.settings
    spec = parse_body(Generate, await read_body(request, settings.max_body_bytes))
    if settings.public_url_unreachable:
        return error(
            422,
            "public_url_unset",
            f"RECEIVER_PUBLIC_URL is not set and the receiver listens on {settings.host}: providers could not "
            "reach its webhook URL. Set RECEIVER_PUBLIC_URL to the URL they can reach.",
            setting="RECEIVER_PUBLIC_URL",
        )
    api_key = settings.api_key(spec.provider)
    if api_key is None:
        setting = f"RECEIVER_{spec.provider.upper()}_API_KEY"
        return error(
            422,
            "provider_not_configured",
            f"{setting} is not set, so the receiver cannot submit to {spec.provider}",
            setting=setting,
        )
    key = idempotency_key(request)
    if key is None:
        submission = _Submission()
        try:
            return _answer(await _generate(runtime, spec, api_key.get_secret_value(), None, submission))
        except asyncio.CancelledError:
            if not runtime.stopping.is_set():
                raise
            return _cut(spec.provider, submission.sent, keyed=False)
    digest = fingerprint(spec.model_dump(mode="json"))
    settled = await settle(runtime, key, digest)
    if settled.claim.fingerprint != digest:
        raise invalid("Idempotency-Key", f"was used within {IDEMPOTENCY_TTL_S / 3600:g} h for a different request")
    if not settled.ours:
        if settled.claim.state == "unknown":
            return error(
                409,
                "idempotency_outcome_unknown",
                "an earlier request with this Idempotency-Key was cut short by a shutdown while "
                f"{spec.provider} had not yet answered its submit: whether it accepted (and charged) it is "
                "unknown, so it is not submitted again. Look for its result among the jobs "
                f"(GET /v1/jobs?provider={spec.provider}), or use a new key to submit anew.",
                job_ids=list(settled.claim.job_ids),
            )
        if settled.claim.state != "done":
            return error(409, "idempotency_key_in_use", "a request with this Idempotency-Key is still being submitted")
        found = [await runtime.store.get_job(job_id) for job_id in settled.claim.job_ids]
        return _answer([job for job in found if job is not None])
    submission = _Submission()
    # The submit runs past this request: a shutdown cutting the request still lets it record its outcome.
    task = runtime.spawn(
        _submit_keyed(runtime, spec, api_key.get_secret_value(), key, submission), name=f"submit {spec.provider}"
    )
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not runtime.stopping.is_set():
            task.cancel()
            raise
        return _cut(spec.provider, submission.sent, keyed=True)
    assert submission.outcome is not None
    return _answer(submission.outcome)


class _Submission:
    """What became of one submit, for the request that started it."""

    def __init__(self) -> None:
        self.sent = False  # the request went to the provider: from then on, its outcome is the provider's
        self.registered: list[str] = []  # jobs registered before the provider answered (ids we chose)
        self.outcome: list[Job] | Response | None = None


async def _submit_keyed(runtime: Runtime, spec: Generate, api_key: str, key: str, submission: _Submission) -> None:
    """Submit under a claimed key, then settle the key: finished with the jobs, released after a refusal
    (a retry may submit), or marked unknown when cut after the request went out."""
    try:
        outcome = await _generate(runtime, spec, api_key, key, submission)
    except BaseException:
        # Awaited, not shielded: shutdown cancels this task once, then awaits it before the store closes.
        if submission.sent:
            await runtime.store.finish_idempotency_key(key, submission.registered, outcome_unknown=True)
            log.warning(
                "the submit to %s under an Idempotency-Key was cut before it answered: the key now says "
                "its outcome is unknown",
                spec.provider,
            )
        else:
            await runtime.store.release_idempotency_key(key)
        raise
    if isinstance(outcome, Response):
        await runtime.store.release_idempotency_key(key)  # refused: a retry with this key may submit
    else:
        await runtime.store.finish_idempotency_key(key, [job.id for job in outcome])
    submission.outcome = outcome


def _cut(provider: str, sent: bool, *, keyed: bool) -> Response:
    """The answer to a request that the server's shutdown cut short."""
    if not sent:
        answer = error(
            503, "shutting_down", "the receiver is shutting down; nothing was submitted: retry", outcome_unknown=False
        )
    else:
        retry = (
            "A retry with the same Idempotency-Key is answered 409 instead of being submitted again."
            if keyed
            else "A retry would be a new submit: send an Idempotency-Key to make retries safe."
        )
        answer = error(
            503,
            "shutting_down",
            f"the receiver is shutting down and {provider} had not answered the submit yet: whether it "
            f"accepted it is unknown. {retry}",
            outcome_unknown=True,
        )
    answer.headers["Retry-After"] = "1"
    return answer


def _answer(outcome: list[Job] | Response) -> Response:
    if isinstance(outcome, Response):
        return outcome
    return JSONResponse({"jobs": [j.to_json() for j in outcome]}, status_code=202)


async def _generate(
    runtime: Runtime, spec: Generate, api_key: str, idempotency: str | None, submission: _Submission
) -> list[Job] | Response:
    """Submit; the jobs, or the 502 answer of a refusal. `submission` follows how far it got."""
    settings = runtime.settings
    provider = REGISTRY[spec.provider]
    # Apiframe de-duplicates on Idempotency-Key: a caller retrying with its own key is charged once.
    # Everywhere else (Runware's taskUUID, Lumenfall's job id) the id must be fresh.
    request_id = idempotency if provider.forwards_idempotency_key and idempotency else str(uuid.uuid4())
    try:
        provider_request = provider.build_submit(
            GenerationSpec(spec.prompt, spec.model, spec.input_image, spec.params),
            api_key=api_key,
            webhook_url=webhook_url(settings, runtime.secrets, provider.name),
            request_id=request_id,
        )
    except BadGeneration as exc:
        raise invalid(exc.field, exc.message) from None
    if provider.answers_synchronously:
        jobs = [
            await lumenfall_calls.start_call(
                runtime, provider_request, unique=request_id, callback_url=spec.callback_url, metadata=spec.metadata
            )
        ]
    else:
        # Ids we chose ourselves (Runware's taskUUID) are registered before the submit: a result that
        # arrives before the provider's answer then counts for the job as submitted (its image count).
        jobs = [await _register(runtime, spec, item) for item in provider.submitted_before(provider_request)]
        submission.registered = [job.id for job in jobs]
        try:
            submission.sent = True
            submitted = await _submit(runtime, provider, provider_request)
        except ProviderError as exc:
            await _discard(runtime, jobs)
            runtime.metrics.submissions.labels(provider.name, "refused").inc()
            log.warning("%s refused a generation (status %s): %s", provider.name, exc.status, exc.message)
            # The provider's own words, which may echo a key or a token back: masked like a log line.
            message = logs.masker_for(settings, runtime.secrets).redact(exc.message)
            return error(502, "provider_refused", message, provider_status=exc.status)
        except asyncio.CancelledError:
            raise  # cut before the answer: it may have been accepted, so its jobs stay to take the results
        except BaseException:
            await asyncio.shield(_discard(runtime, jobs))
            raise
        if not jobs:
            jobs = [await _register(runtime, spec, item) for item in submitted]
        runtime.metrics.submissions.labels(provider.name, "accepted").inc()
    log.info(
        "submitted to %s: %s",
        provider.name,
        ", ".join(j.id for j in jobs),
        extra={"job_id": jobs[0].id} if len(jobs) == 1 else {"job_ids": [j.id for j in jobs]},
    )
    return jobs


async def _register(runtime: Runtime, spec: Generate, item: Submitted) -> Job:
    job, _ = await runtime.store.register_job(
        provider=spec.provider,
        provider_job_id=item.provider_job_id,
        callback_url=spec.callback_url,
        metadata=spec.metadata,
        expected_outputs=item.expected_outputs,
    )
    return job


async def _discard(runtime: Runtime, jobs: list[Job]) -> None:
    """A refused submit leaves no job behind: those registered before it go, unless a result already came."""
    for job in jobs:
        if not await runtime.store.discard_job(job.id):
            log.warning(
                "job %s was refused by %s but already has a result: kept",
                job.id,
                job.provider,
                extra={"job_id": job.id},
            )


def _usable(submitted: list[Submitted]) -> list[Submitted]:
    for item in submitted:
        if not storable_text(item.provider_job_id):
            raise InvalidPayload(f"job id {item.provider_job_id!r} holds an unpaired UTF-16 surrogate")
    return submitted


async def _submit(runtime: Runtime, provider: Provider, request: ProviderRequest) -> list[Submitted]:
    response = await call(runtime, provider.name, request, timeout=runtime.settings.provider_timeout_s)
    try:
        return _usable(provider.parse_submit(request, response.content))
    except InvalidPayload as exc:
        # It may have accepted (and charged) all the same: keep what it said where an operator can find it.
        log.error(
            "%s answered a submit with %s but unusably (%s): %.500r",
            provider.name,
            response.status_code,
            exc,
            response.content,
        )
        raise ProviderError(f"unexpected answer from {provider.name}: {exc}", status=response.status_code) from None
