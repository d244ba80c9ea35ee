"""A stand-in for the Hugging Face Hub's HTTP API, on 127.0.0.1 and an ephemeral port.

It answers the requests both COCOON's ``scripts/build-model`` (through
huggingface_hub 1.0.1) and :mod:`cocoon_operator.models` make, for repositories
held in memory, so the two builders can be compared on the same bytes without the
internet. Only the parts of the API those clients use are here:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: the
  repository's commit (``sha``) and its files (``siblings``);
- ``GET /api/models/{repo}/tree/{rev}?recursive=...``: the file listing, paged with
  a ``Link: <...>; rel="next"`` header like the Hub's;
- ``GET`` and ``HEAD /{repo}/resolve/{rev}/{path}``: a file, with the headers
  huggingface_hub insists on (``X-Repo-Commit``, ``ETag``, ``Content-Length``).

The server is a thread, so a synchronous subprocess (the reference script) and
asyncio code can both talk to it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Repo:
    """One model repository at one commit: its files by path."""

    commit: str
    files: dict[str, bytes]
    siblings_listed: bool = True  # False: the repo info lists none, as for very large repos


@dataclass
class Hub:
    repos: dict[str, Repo]
    token: str | None = None  # when set, every request must carry it
    page_size: int = 2
    url: str = ""
    seen_authorization: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def _route(hub: Hub, path: str) -> tuple[str, str, str] | None:
    """(kind, repo id, rest) for a request path, or None."""
    for repo_id in hub.repos:
        for kind, prefix in (
            ("api", f"/api/models/{repo_id}"),
            ("resolve", f"/{repo_id}/resolve/"),
        ):
            if (
                path == prefix
                or path.startswith(prefix + "/")
                or (kind == "resolve" and path.startswith(prefix))
            ):
                return kind, repo_id, path[len(prefix) :]
    return None


class _Handler(BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _send(self, status: int, payload: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _json(self, value: Any, body: bool, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(value).encode()
        self._send(200, payload, {"Content-Type": "application/json", **(headers or {})}, body)

    def _serve(self, body: bool) -> None:
        hub = self.hub
        hub.requests.append(f"{self.command} {self.path}")
        auth = self.headers.get("Authorization")
        if auth is not None:
            hub.seen_authorization.append(auth)
        if hub.token is not None and auth != f"Bearer {hub.token}":
            self._send(
                401, b'{"error":"Invalid credentials"}', {"X-Error-Code": "RepoNotFound"}, body
            )
            return
        url = urlsplit(self.path)
        route = _route(hub, unquote(url.path))
        if route is None:
            self._send(
                404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body
            )
            return
        kind, repo_id, rest = route
        repo = hub.repos[repo_id]
        if kind == "api":
            revision = re.fullmatch(r"/revision/([^/]+)", rest)
            tree = re.fullmatch(r"/tree/([^/]+)", rest)
            if rest == "" or (revision and revision[1] in (repo.commit, "main")):
                siblings = [{"rfilename": p} for p in repo.files] if repo.siblings_listed else []
                self._json({"id": repo_id, "sha": repo.commit, "siblings": siblings}, body)
                return
            if tree and tree[1] in (repo.commit, "main"):
                entries: list[dict[str, Any]] = []
                dirs = sorted({p.rsplit("/", 1)[0] for p in repo.files if "/" in p})
                entries += [
                    {"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in dirs
                ]
                entries += [
                    {"type": "file", "path": p, "oid": "0" * 40, "size": len(b)}
                    for p, b in sorted(repo.files.items())
                ]
                start = int(parse_qs(url.query).get("cursor", ["0"])[0])
                page = entries[start : start + hub.page_size]
                headers = {}
                if start + hub.page_size < len(entries):
                    nxt = f"{hub.url}{url.path}?recursive=true&cursor={start + hub.page_size}"
                    headers["Link"] = f'<{nxt}>; rel="next"'
                self._json(page, body, headers)
                return
            self._send(
                404, b'{"error":"Revision not found"}', {"X-Error-Code": "RevisionNotFound"}, body
            )
            return
        revision, _, filename = rest.partition("/")
        if revision not in (repo.commit, "main"):
            self._send(404, b"Revision not found", {"X-Error-Code": "RevisionNotFound"}, body)
            return
        if filename not in repo.files:
            self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, body)
            return
        data = repo.files[filename]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": etag,
            "Content-Type": "application/octet-stream",
        }
        self._send(200, data, headers, body)


@contextmanager
def serving(hub: Hub) -> Iterator[Hub]:
    """Serve ``hub`` on 127.0.0.1 (an ephemeral port) for the ``with`` block; ``hub.url`` is set."""
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll: shutdown() waits for serve_forever's next poll (0.5 s by default),
    # at every test's end.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
