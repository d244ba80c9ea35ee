"""The few Hugging Face Hub HTTP endpoints a model download needs, over aiohttp.

build-model downloads with ``hf download`` (huggingface_hub 1.0.1). Rather than
depend on that library and its dependencies (httpx, an update check against
PyPI on every CLI run, a Rust Xet client), this speaks the same HTTP to the same
endpoints (huggingface_hub 1.0.1 ``hf_api.py`` ``model_info`` and
``list_repo_tree``, ``file_download.py`` ``hf_hub_url``):

- ``GET {endpoint}/api/models/{repo}`` and ``.../revision/{rev}``: the commit
  (``sha``) and the file list (``siblings[].rfilename``);
- ``GET {endpoint}/api/models/{repo}/tree/{rev}?recursive=true&expand=false``,
  paged by ``Link: <...>; rel="next"``: the file list of a very large repository;
- ``GET {endpoint}/{repo}/resolve/{commit}/{path}``: a file's bytes. The Hub
  redirects large files to its CDN; aiohttp drops the ``Authorization`` header
  on a redirect to another origin, so the token stays with the Hub.

The token is sent as ``Authorization: Bearer`` and nowhere else: errors name the
method, URL and status, never the headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from cocoon_operator import __version__
from cocoon_operator.models._plan import ModelBuildError

log = logging.getLogger("cocoon_operator.models")

CHUNK = 1 << 20
# No whole-request limit: a model file can be tens of gigabytes. A connection that
# stops sending for this long is given up.
READ_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_read=120)


@dataclass(frozen=True)
class RepoInfo:
    """A repository at a revision: its commit and, when the Hub listed them, its files."""

    commit: str
    files: tuple[str, ...]


class Hub:
    """A client for one Hub endpoint (huggingface.co or a mirror), with an optional token."""

    def __init__(self, endpoint: str, token: str | None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._headers = {"User-Agent": f"cocoon-operator/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Hub:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=READ_TIMEOUT)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use Hub in 'async with'")
        return self._session

    async def _json(self, url: str, params: dict[str, str] | None = None) -> tuple[Any, str | None]:
        """GET a JSON document; returns it and the next page's URL, if any."""
        try:
            async with self.session.get(url, params=params) as resp:
                _raise_for_status("GET", url, resp)
                body = await resp.json(content_type=None)
                link = resp.links.get("next")
                nxt = link.get("url") if link is not None else None
                return body, str(nxt) if nxt is not None else None
        except aiohttp.ClientError as exc:
            raise ModelBuildError(f"GET {url}: {_describe(exc)}") from None
        except ValueError:
            raise ModelBuildError(f"GET {url}: the Hub's answer is not JSON") from None

    def _api(self, name: str) -> str:
        return f"{self.endpoint}/api/models/{name}"

    async def repo_info(self, name: str, revision: str | None) -> RepoInfo:
        """The repository's commit at ``revision`` (its default branch when None) and its files."""
        url = self._api(name)
        if revision is not None:
            url += f"/revision/{quote(revision, safe='')}"
        body, _ = await self._json(url)
        if not isinstance(body, dict) or not isinstance(body.get("sha"), str):
            raise ModelBuildError(f"GET {url}: the Hub's answer has no commit ('sha')")
        siblings = body.get("siblings") or []
        try:
            files = tuple(str(s["rfilename"]) for s in siblings)
        except (TypeError, KeyError):
            raise ModelBuildError(f"GET {url}: a sibling has no 'rfilename'") from None
        return RepoInfo(commit=body["sha"], files=files)

    async def tree(self, name: str, commit: str) -> tuple[str, ...]:
        """Every file of the repository at ``commit``, from the tree API, page by page."""
        return tuple(path for path, _ in await self.tree_sizes(name, commit))

    async def tree_sizes(self, name: str, commit: str) -> tuple[tuple[str, int], ...]:
        """Every file of the repository at ``commit`` with its size in bytes (the tree API's
        ``size``, the whole file's for LFS files too), page by page."""
        url: str | None = f"{self._api(name)}/tree/{quote(commit, safe='')}"
        params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
        files: list[tuple[str, int]] = []
        while url is not None:
            page, url_next = await self._json(url, params)
            if not isinstance(page, list):
                raise ModelBuildError(f"GET {url}: the Hub's tree answer is not a list")
            for e in page:
                if isinstance(e, dict) and e.get("type") == "file":
                    size = e.get("size")
                    if not isinstance(size, int) or size < 0:
                        raise ModelBuildError(f"GET {url}: file {e.get('path')!r} has no size")
                    files.append((str(e["path"]), size))
            url, params = url_next, None  # the next link carries its own query
        return tuple(files)

    def file_url(self, name: str, commit: str, path: str) -> str:
        return f"{self.endpoint}/{name}/resolve/{quote(commit, safe='')}/{quote(path)}"

    async def download(
        self,
        name: str,
        commit: str,
        path: str,
        dest: Path,
        on_chunk: Callable[[int], None] | None = None,
    ) -> int:
        """Write one file of the repository at ``commit`` to ``dest``; returns its size.

        The Hub says which commit it served (``X-Repo-Commit``) and, unless it
        compressed the answer, how long the file is: a different commit or a
        short file is refused rather than archived.
        """
        url = self.file_url(name, commit, path)
        try:
            async with self.session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
                _raise_for_status("GET", url, resp)
                served = resp.headers.get("X-Repo-Commit")
                if served is not None and served != commit:
                    raise ModelBuildError(
                        f"GET {url}: the Hub served commit {served}, not {commit}"
                    )
                expected = resp.content_length if "Content-Encoding" not in resp.headers else None
                size = 0
                f = await asyncio.to_thread(dest.open, "wb")
                try:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        await asyncio.to_thread(f.write, chunk)
                        size += len(chunk)
                        if on_chunk is not None:
                            on_chunk(len(chunk))
                finally:
                    await asyncio.to_thread(f.close)
        except aiohttp.ClientError as exc:
            raise ModelBuildError(f"GET {url}: {_describe(exc)}") from None
        if expected is not None and size != expected:
            raise ModelBuildError(f"GET {url}: got {size} bytes of {expected}")
        return size


def _raise_for_status(method: str, url: str, resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    hint = ""
    if resp.status in (401, 403):
        hint = " (no token, or one not allowed to read this repository: is it gated?)"
    elif resp.status == 404:
        code = resp.headers.get("X-Error-Code")
        hint = f" ({code})" if code else " (no such repository, revision or file)"
    raise ModelBuildError(f"{method} {url}: HTTP {resp.status}{hint}")


def _describe(exc: aiohttp.ClientError) -> str:
    """An aiohttp error in a few words, without the request's headers."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    return f"{type(exc).__name__}: {exc}"
