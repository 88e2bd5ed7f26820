"""Completion webhooks: when a job ends (completed, failed or cancelled), its status JSON is
POSTed to the job's ``notify_url`` (or the server-wide ``WEBHOOK_URL``), signed with
HMAC-SHA256 under ``WEBHOOK_SECRET``.

Job ends are heard through :meth:`app.job_repository.JobRepository.watch_ends`, from any thread; each
delivery is an asyncio task on the server loop, so nothing waits for a receiver. Failures
are retried with exponential backoff; each failure and the outcome go to the job's log.
URLs pass the remote-URL policy of dataset sources (:func:`app.sources.check_remote`).

A delivery owed is a row of the store (``webhook_deliveries``: the URL, the tries made, when
the next is due), written as the job's end is heard and deleted once delivered or given
up; ``start`` resumes every row left by a server that stopped or was killed meanwhile.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from . import sources
from .errors import InvalidRequest, ProcessingError, shorten
from .jsonsafe import json_safe
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Processing-Signature"
MAX_URL_CHARS = 2048
PROTOCOLS = ("http", "https")


def policy_of(settings: Settings) -> sources.RemotePolicy:
    """The remote-URL policy of dataset sources, as the settings give it."""
    return sources.RemotePolicy(tuple(p.lower() for p in settings.remote_protocols), settings.remote_allow_private)


def check_url(url: str, policy: sources.RemotePolicy, field: str = "notify_url") -> str:
    """``url`` if it is an http(s) URL the policy allows; InvalidRequest naming ``field`` if not.

    Resolves the host (blocking: call it off the loop)."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(f"'{field}' is {len(url)} characters long; at most {MAX_URL_CHARS} are accepted",
                             {"field": field, "limit": MAX_URL_CHARS})
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise InvalidRequest(f"'{field}' is not a valid URL: {exc}", {"field": field}) from None
    protocol = parts.scheme.lower()
    if protocol not in PROTOCOLS or not host:
        raise InvalidRequest(f"'{field}' must be an http:// or https:// URL with a host, got {shorten(repr(url))}",
                             {"field": field})
    try:
        sources.check_remote(url, protocol, policy)
    except ProcessingError as exc:  # refused by the policy, or a host that does not resolve
        raise InvalidRequest(f"'{field}' is refused: {exc.message}", {"field": field, **exc.details}) from None
    return url


def signature(body: bytes, secret: str) -> str:
    """The header value for ``body``: ``sha256=`` and the hex HMAC-SHA256 under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Delivers each ended job's status to its URL; ``start`` subscribes, ``stop`` cancels deliveries."""

    def __init__(self, settings: Settings, store: Store, status: Callable[[str], dict[str, Any]]):
        self.settings = settings
        self.store = store
        self.status = status  # the API's status view of a job (GET /jobs/{id}/status)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self._client: AsyncHTTPClient | None = None
        self._stopping = False

    def start(self) -> None:
        """Hear every job end from now on, and resume the deliveries a previous run left owed."""
        self._loop = asyncio.get_running_loop()
        self._client = AsyncHTTPClient(force_instance=True)
        self.store.jobs.watch_ends(self._ended, lambda: None)
        for job_id in self.store.pending_deliveries():
            self.store.log_job(job_id, "webhook_resumed", "webhook delivery resumed after a server restart")
            self._schedule(job_id)

    async def stop(self) -> None:
        """Cancel deliveries in flight (still owed in the store: the next start resumes them)."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            self._client.close()

    def _ended(self, row: dict[str, Any]) -> None:
        """A job reached a terminal status (called from the writing thread, any thread): owe its
        webhook in the store at once, then deliver it from the loop."""
        if self._loop is None or self._stopping:
            return
        job = self.store.jobs.get(row["job_id"])
        url = (job or {}).get("notify_url") or self.settings.webhook_url
        if not url:
            return
        self.store.add_delivery(row["job_id"], url)
        self._loop.call_soon_threadsafe(self._schedule, row["job_id"])

    def _schedule(self, job_id: str) -> None:
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(job_id), name=f"webhook-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, job_id: str) -> bool:
        """POST the job's status to the URL owed, retrying with backoff from the tries already made
        (before a restart too); True once a receiver took it. The debt ends either way."""
        owed = self.store.delivery(job_id)
        job = self.store.jobs.get(job_id)
        if owed is None or job is None:
            self.store.end_delivery(job_id)
            return False
        url, done = owed["url"], owed["attempts"]
        loop = asyncio.get_running_loop()
        try:  # again at delivery: the host may resolve elsewhere than at submit
            await loop.run_in_executor(None, check_url, url, policy_of(self.settings))
        except InvalidRequest as exc:
            self.store.log_job(job_id, "webhook_failed", f"webhook not sent: {exc.message}", "error", {"url": url})
            self.store.end_delivery(job_id)
            return False
        await asyncio.sleep(max(0.0, owed["next_at"] - time.time()))  # a retry's wait left over from before
        body = json.dumps(json_safe(self.status(job_id)), default=str).encode()
        tries = self.settings.webhook_tries
        wait = self.settings.webhook_backoff_s * 2 ** done
        for attempt in range(done + 1, tries + 1):
            problem = await self._post(url, body, job["status"])
            if problem is None:
                self.store.end_delivery(job_id)
                self.store.log_job(job_id, "webhook_delivered", f"webhook delivered to {url} (attempt {attempt})",
                                   details={"url": url, "attempt": attempt})
                return True
            last = attempt == tries
            self.store.log_job(job_id, "webhook_failed",
                               f"webhook to {url} failed (attempt {attempt} of {tries}): {problem}"
                               + ("; giving up" if last else f"; retrying in {wait:g} s"),
                               "error" if last else "warning", {"url": url, "attempt": attempt, "problem": problem})
            if last:
                break
            self.store.delivery_tried(job_id, attempt, time.time() + wait)
            await asyncio.sleep(wait)
            wait *= 2
        self.store.end_delivery(job_id)
        return False

    async def _post(self, url: str, body: bytes, status: str) -> str | None:
        """One delivery attempt: None when the receiver answered 2xx, else what went wrong."""
        assert self._client is not None
        headers = {"Content-Type": "application/json", "User-Agent": "processing-cluster-webhook",
                   "X-Processing-Event": f"job.{status}"}
        if self.settings.webhook_secret:
            headers[SIGNATURE_HEADER] = signature(body, self.settings.webhook_secret)
        timeout = self.settings.webhook_timeout_s
        request = HTTPRequest(url, method="POST", body=body, headers=headers, connect_timeout=timeout,
                              request_timeout=timeout, follow_redirects=False)  # a redirect could leave the policy
        try:
            response = await self._client.fetch(request, raise_error=False)
        except Exception as exc:  # noqa: BLE001 - refused, reset, timed out, TLS: all a failed try
            return f"{type(exc).__name__}: {shorten(str(exc))}"
        return None if 200 <= response.code < 300 else f"HTTP {response.code}"
