"""`GET|HEAD /media/{signature}/{sha256}`: mirrored objects, by signed capability URL only.

The bytes come from providers, so they are hostile: every answer forbids script (a sandboxing CSP),
forbids type sniffing, and anything but a raster image or a video is a download, never a page of the
receiver's origin (where the inspector keeps its token).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from receiver.media.guard import mirrorable
from receiver.media.objects import ObjectMissing
from receiver.media.sign import Unsatisfiable, parse_range, verified_sha256
from receiver.runtime import Runtime

IMMUTABLE = "public, max-age=31536000, immutable"
GUARD = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _not_found() -> Response:
    return Response("not found\n", status_code=404, media_type="text/plain")


def _gone() -> Response:
    return Response("gone: past its retention\n", status_code=410, media_type="text/plain")


def disposition(content_type: str, sha256: str) -> str:
    """Inline for a raster image or a video; anything else (octet-stream, a type stored before the
    allow-list) downloads."""
    return "inline" if mirrorable(content_type) else f'attachment; filename="{sha256[:16]}"'


async def serve_media(request: Request) -> Response:
    response = await _answer(request)
    response.headers.update(GUARD)
    return response


async def _answer(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    media = runtime.media
    if media is None:
        return _not_found()
    sha256 = verified_sha256(media.key, request.path_params.get("rest", ""))
    if sha256 is None:
        return _not_found()
    obj = await runtime.store.media_object(sha256)
    if obj is None:
        return _not_found()
    if obj.deleted_at is not None:
        return _gone()
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
        "Content-Type": obj.content_type,
        "Content-Disposition": disposition(obj.content_type, sha256),
    }
    cached = etag in request.headers.get("if-none-match", "")
    # The media table says the object exists; the bytes may not be there (another replica's disk, a new
    # deploy): answers that send no bytes ask the media store first, so HEAD and GET agree (404).
    if (cached or request.method == "HEAD" or media.objects.redirects) and not await media.objects.exists(sha256):
        return _not_found()
    if cached:
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    if media.objects.redirects and request.method == "GET":
        url = await media.objects.presigned(sha256)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, max-age=60"})
    try:
        byte_range = parse_range(request.headers.get("range"), obj.size)
    except Unsatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{obj.size}", "ETag": etag})
    start, end = (byte_range.start, byte_range.end) if byte_range else (0, obj.size)
    status = 206 if byte_range else 200
    headers["Content-Length"] = str(end - start)
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{obj.size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    try:
        body = await media.objects.read(sha256, start=start, end=end)
    except ObjectMissing:
        return _not_found()
    return StreamingResponse(body, status_code=status, headers=headers)
