"""A small Hugging Face Hub-compatible HTTP server for the test suite, and its `hub_server` fixture.

The real `huggingface_hub` client talks to it over real HTTP on 127.0.0.1 (tests/conftest.py points
`HF_ENDPOINT` at it before anything imports huggingface_hub). It implements the endpoints the client
uses to create repos, upload (preupload → LFS batch → PUT → verify → NDJSON commit), list, inspect and
download files, manage branches/tags, and validate README metadata. Everything it receives (repos,
refs, commits, file contents) is stored as JSON and raw bytes under `storage_root` and served back
from there.

Only the standard library is needed, except for `validate-yaml` and the `cardData` of repo info,
which parse README front matter with PyYAML (always installed alongside huggingface_hub; imported
lazily). This module must not import huggingface_hub: conftest imports it before the client reads
its environment variables.

Summary of the protocol rules it enforces (all modelled on the Hub):
* writes need `Authorization: Bearer <token>` with the write token (401 otherwise; 403 with the
  read-only token or for a namespace the user doesn't own);
* a request carrying an unknown token is refused with 401, even on public reads;
* private repos are invisible (404 RepoNotFound) without a valid token;
* errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) and `X-Error-Message`,
  with a JSON body {"error": "..."};
* preupload decides "lfs" for *.safetensors (always), files matched by `filter=lfs` in the repo's
  .gitattributes, files above 10 MB and binary samples (NUL byte); the commit endpoint refuses
  binary or >10 MB content sent as a regular file and LFS pointers whose object was never uploaded;
* LFS uploads go to a signed URL on this server (no auth header, like a presigned S3 URL); the
  content is checked against the announced sha256 and size;
* new repos start with the Hub's "initial commit" holding the default .gitattributes.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import mimetypes
import os
import re
import secrets
import shutil
import sys
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

WRITE_TOKEN = "hf_test_write_token"
READ_TOKEN = "hf_test_read_token"
USER = "test-user"
ORGS = ("test-org",)

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub's limit for regular (non-LFS) files
ALWAYS_LFS_SUFFIXES = (".safetensors",)

REPO_TYPE_BY_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
PLURAL_BY_REPO_TYPE = {v: k for k, v in REPO_TYPE_BY_PLURAL.items()}
URL_PREFIX_BY_REPO_TYPE = {"model": "", "dataset": "datasets/", "space": "spaces/"}

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"

# The .gitattributes the Hub puts in the initial commit of a new model repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)

# Name rules of the Hub for a repo id (huggingface_hub.utils._validators mirrors them).
_REPO_NAME_PART = re.compile(r"[\w\-.]{1,96}")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")  # as in huggingface_hub.repocard

KNOWN_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr",
    "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib",
    "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3",
    "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
)

KNOWN_PIPELINE_TAGS = (
    "text-classification", "token-classification", "table-question-answering", "question-answering",
    "zero-shot-classification", "translation", "summarization", "feature-extraction", "text-generation",
    "text2text-generation", "fill-mask", "sentence-similarity", "text-to-speech", "text-to-audio",
    "automatic-speech-recognition", "audio-to-audio", "audio-classification", "audio-text-to-text",
    "voice-activity-detection", "depth-estimation", "image-classification", "object-detection",
    "image-segmentation", "text-to-image", "image-to-text", "image-to-image", "image-to-video",
    "unconditional-image-generation", "video-classification", "reinforcement-learning", "robotics",
    "tabular-classification", "tabular-regression", "tabular-to-text", "table-to-text", "multiple-choice",
    "text-ranking", "text-retrieval", "time-series-forecasting", "text-to-video", "image-text-to-text",
    "image-text-to-image", "image-text-to-video", "visual-question-answering", "document-question-answering",
    "zero-shot-image-classification", "graph-ml", "mask-generation", "zero-shot-object-detection", "text-to-3d",
    "image-to-3d", "image-feature-extraction", "video-text-to-text", "keypoint-detection",
    "visual-document-retrieval", "any-to-any", "video-to-video", "other",
)

EMPTY_METADATA_WARNING = "empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards#model-card-metadata)"

SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")


# --------------------------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as `oid`/`blobId` and uses as ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_valid_repo_id(value: Any, *, require_namespace: bool = False) -> bool:
    """A Hub repo id: `[namespace/]name`, word chars, '-', '.', no '--'/'..', no leading/trailing '-'/'.'."""
    if not isinstance(value, str) or not value or "\\" in value:
        return False
    parts = value.split("/")
    if len(parts) > 2 or (require_namespace and len(parts) != 2):
        return False
    for part in parts:
        if not _REPO_NAME_PART.fullmatch(part) or "--" in part or ".." in part:
            return False
        if part[0] in "-." or part[-1] in "-.":
            return False
    return True


def _is_binary(sample: bytes) -> bool:
    return b"\0" in sample


def _gitattributes_lfs_patterns(content: str) -> list[tuple[str, bool]]:
    rules = []
    for line in content.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, *attrs = line.split()
        if "filter=lfs" in attrs:
            rules.append((pattern, True))
        elif "-filter" in attrs or "!filter" in attrs:
            rules.append((pattern, False))
    return rules


def _pattern_matches(pattern: str, path: str) -> bool:
    if pattern.endswith("/"):
        prefix = pattern.strip("/")
        return path == prefix or path.startswith(prefix + "/") or f"/{prefix}/" in f"/{path}"
    if "/" in pattern.strip("/"):
        return fnmatch.fnmatchcase(path, pattern.lstrip("/"))
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern) or any(
        fnmatch.fnmatchcase(part, pattern) for part in path.split("/")[:-1]
    )


def _gitignore_matches(content: str, path: str) -> bool:
    ignored = False
    for line in content.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if _pattern_matches(line[1:] if negate else line, path):
            ignored = not negate
    return ignored


def _validate_path_in_repo(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


@dataclass(frozen=True)
class HubCommit:
    """One commit as stored by the server (see `HubServer.commits`)."""

    id: str
    message: str  # the commit summary (title)
    description: str
    parents: tuple[str, ...]
    branch: str | None  # the branch (or "refs/pr/N") it was made on
    date: str
    lfs_files: tuple[str, ...]  # paths added/updated through an `lfsFile` line (LFS upload)
    regular_files: tuple[str, ...]  # paths added/updated through a `file` line (inline base64 content)
    deleted_files: tuple[str, ...]
    files: dict[str, dict[str, Any]]  # the whole tree after this commit: path -> {size, oid, lfs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HubCommit":
        changes = data["changes"]
        return cls(
            id=data["id"], message=data["summary"], description=data["description"], parents=tuple(data["parents"]),
            branch=data.get("branch"), date=data["date"], lfs_files=tuple(changes["lfs"]),
            regular_files=tuple(changes["regular"]), deleted_files=tuple(changes["deleted"]), files=data["tree"],
        )


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> "Response":
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return Response.json({"error": self.message, **self.extra}, status=self.status, headers=headers)


def repo_not_found(repo_id: str) -> HubError:
    return HubError(404, "Repository not found", "RepoNotFound", extra={"repo_id": repo_id})


def revision_not_found(revision: str) -> HubError:
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def unauthorized() -> HubError:
    return HubError(401, INVALID_CREDENTIALS)


@dataclass
class Request:
    method: str
    path: str  # raw (still percent-encoded) path
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    level: str | None = None  # "write", "read" or None (anonymous)

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as err:
            raise HubError(400, f"Malformed JSON body: {err}") from None

    def flag(self, name: str) -> bool:
        return (self.query.get(name) or ["false"])[-1].lower() in ("1", "true", "yes")


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_length: int | None = None  # for HEAD: the length the GET body would have

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        return cls(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
                   json.dumps(data).encode())


# ----------------------------------------------------------------------------------------------- store


class HubStore:
    """All state on disk: objects/{git,lfs}/<id> hold contents, repos/<type>s/<ns>/<name>/ holds repo.json
    (visibility, refs, linked LFS objects, commit order) and commits/<sha>.json (message, parents, full tree)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.RLock()
        for sub in ("objects/git", "objects/lfs", "objects/tmp", "repos"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- content
    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "objects" / "tmp" / uuid.uuid4().hex
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def put_blob(self, content: bytes) -> str:
        oid = git_blob_oid(content)
        path = self.root / "objects" / "git" / oid
        if not path.exists():
            self._write_atomic(path, content)
        return oid

    def put_lfs(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        path = self.root / "objects" / "lfs" / sha
        if not path.exists():
            self._write_atomic(path, content)
        return sha

    def has_lfs(self, sha256: str) -> bool:
        return (self.root / "objects" / "lfs" / sha256).is_file()

    def read_entry(self, entry: dict[str, Any]) -> bytes:
        if entry.get("lfs"):
            return (self.root / "objects" / "lfs" / entry["lfs"]["oid"]).read_bytes()
        return (self.root / "objects" / "git" / entry["oid"]).read_bytes()

    def tree_entry(self, content: bytes, lfs: bool) -> dict[str, Any]:
        if lfs:
            sha = self.put_lfs(content)
            pointer = lfs_pointer(sha, len(content))
            return {"size": len(content), "oid": git_blob_oid(pointer),
                    "lfs": {"oid": sha, "size": len(content), "pointerSize": len(pointer)}}
        return {"size": len(content), "oid": self.put_blob(content), "lfs": None}

    # -- repos
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        ns, name = repo_id.split("/")
        return self.root / "repos" / PLURAL_BY_REPO_TYPE[repo_type] / ns / name

    def load_repo(self, repo_type: str, repo_id: str) -> dict[str, Any] | None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        with self.lock:
            return json.loads(path.read_text()) if path.is_file() else None

    def save_repo(self, meta: dict[str, Any]) -> None:
        data = json.dumps(meta, indent=1).encode()
        self._write_atomic(self.repo_dir(meta["type"], meta["id"]) / "repo.json", data)

    def list_repos(self) -> list[tuple[str, str]]:
        out = []
        for plural, repo_type in REPO_TYPE_BY_PLURAL.items():
            for path in sorted((self.root / "repos" / plural).glob("*/*/repo.json")):
                out.append((repo_type, f"{path.parent.parent.name}/{path.parent.name}"))
        return out

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> tuple[dict[str, Any], bool]:
        with self.lock:
            existing = self.load_repo(repo_type, repo_id)
            if existing is not None:
                return existing, False
            meta = {"id": repo_id, "type": repo_type, "private": bool(private), "createdAt": _now(),
                    "branches": {}, "tags": {}, "pulls": {}, "lfs": [], "commits": []}
            sha = self._write_commit(meta, None, "main", "initial commit", "",
                                     {".gitattributes": self.tree_entry(DEFAULT_GITATTRIBUTES.encode(), lfs=False)},
                                     {"lfs": [], "regular": [".gitattributes"], "deleted": []})
            meta["branches"]["main"] = sha
            self.save_repo(meta)
            return meta, True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            shutil.rmtree(self.repo_dir(repo_type, repo_id))

    # -- commits
    def load_commit(self, meta: dict[str, Any], sha: str) -> dict[str, Any]:
        return json.loads((self.repo_dir(meta["type"], meta["id"]) / "commits" / f"{sha}.json").read_text())

    def _write_commit(self, meta: dict[str, Any], parent: str | None, branch: str, summary: str, description: str,
                      tree: dict[str, Any], changes: dict[str, list[str]]) -> str:
        date = _now()
        sha = hashlib.sha1(json.dumps([parent, summary, description, date, sorted(tree.items()),
                                       uuid.uuid4().hex]).encode()).hexdigest()
        record = {"id": sha, "parents": [parent] if parent else [], "branch": branch, "summary": summary,
                  "description": description, "date": date, "author": USER, "tree": tree, "changes": changes}
        self._write_atomic(self.repo_dir(meta["type"], meta["id"]) / "commits" / f"{sha}.json",
                           json.dumps(record, indent=1).encode())
        meta["commits"].append(sha)
        return sha

    def resolve(self, meta: dict[str, Any], revision: str) -> str | None:
        """Branch, tag, `refs/heads/x`, `refs/tags/x`, `refs/pr/N`, or a full/abbreviated (>=7) commit sha."""
        if revision in meta["branches"]:
            return meta["branches"][revision]
        if revision in meta["tags"]:
            return meta["tags"][revision]
        for prefix, refs in (("refs/heads/", meta["branches"]), ("refs/tags/", meta["tags"])):
            if revision.startswith(prefix) and revision[len(prefix):] in refs:
                return refs[revision[len(prefix):]]
        if revision in meta["pulls"]:
            return meta["pulls"][revision]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [sha for sha in meta["commits"] if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def commit(self, meta: dict[str, Any], branch: str, summary: str, description: str,
               ops: list[tuple[str, str, Any]], parent_commit: str | None = None) -> str:
        """Apply ops [("file"|"lfs"|"delete"|"deleteFolder", path, entry-or-None)] on top of `branch`."""
        with self.lock:
            meta.update(self.load_repo(meta["type"], meta["id"]) or meta)  # refresh under the lock
            refs = meta["pulls"] if branch.startswith("refs/pr/") else meta["branches"]
            head = refs.get(branch)
            if head is None:
                raise revision_not_found(branch)
            if parent_commit is not None and not head.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(self.load_commit(meta, head)["tree"])
            changes: dict[str, list[str]] = {"lfs": [], "regular": [], "deleted": []}
            for kind, path, entry in ops:
                if kind == "delete":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                    changes["deleted"].append(path)
                elif kind == "deleteFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in tree if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
                    changes["deleted"].extend(doomed)
                else:
                    if any(p.startswith(path + "/") for p in tree) or any(
                            tree.get("/".join(path.split("/")[:i])) for i in range(1, path.count("/") + 1)):
                        raise HubError(400, f"Path conflicts with an existing file or folder: {path}")
                    tree[path] = entry
                    changes["lfs" if kind == "lfs" else "regular"].append(path)
            sha = self._write_commit(meta, head, branch, summary, description, tree, changes)
            refs[branch] = sha
            self.save_repo(meta)
            return sha


# ------------------------------------------------------------------------------------------------- app


class HubApp:
    def __init__(self, store: HubStore, server: "HubServer"):
        self.store = store
        self.server = server
        self.secret = secrets.token_bytes(32)

    # ---------------------------------------------------------------- auth & lookups
    def authenticate(self, req: Request) -> None:
        header = req.headers.get("Authorization")
        if header is None:
            return
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token not in (self.server.token, self.server.read_token):
            raise unauthorized()
        req.level = "write" if token == self.server.token else "read"

    def require_write(self, req: Request, namespace: str | None = None) -> None:
        if req.level is None:
            raise unauthorized()
        if req.level != "write":
            raise HubError(403, "You don't have the rights to write with this token (read-only)")
        if namespace is not None and namespace not in (self.server.user, *self.server.orgs):
            raise HubError(403, f"You don't have the rights to write in the namespace '{namespace}'")

    def get_repo(self, req: Request, repo_type: str, repo_id: str) -> dict[str, Any]:
        meta = self.store.load_repo(repo_type, repo_id) if is_valid_repo_id(repo_id, require_namespace=True) else None
        if meta is None or (meta["private"] and req.level is None):
            raise repo_not_found(repo_id)
        return meta

    def get_commit(self, meta: dict[str, Any], revision: str) -> dict[str, Any]:
        sha = self.store.resolve(meta, revision)
        if sha is None:
            raise revision_not_found(revision)
        return self.store.load_commit(meta, sha)

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.server.url}/{URL_PREFIX_BY_REPO_TYPE[repo_type]}{repo_id}"

    # ---------------------------------------------------------------- dispatch
    def handle(self, req: Request) -> Response:
        self.authenticate(req)
        p, m = req.path, req.method
        if p == "/api/whoami-v2" and m == "GET":
            return self.whoami(req)
        if p == "/api/repos/create" and m == "POST":
            return self.create_repo(req)
        if p == "/api/repos/delete" and m == "DELETE":
            return self.delete_repo(req)
        if p == "/api/validate-yaml" and m == "POST":
            return self.validate_yaml(req)
        if match := re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+)/([^/]+)(/.*)?", p):
            plural, ns, name, rest = match.groups()
            return self.repo_api(req, REPO_TYPE_BY_PLURAL[plural], f"{unquote(ns)}/{unquote(name)}", rest or "")
        if match := re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch", p):
            if m != "POST":
                raise HubError(405, "Method not allowed")
            plural, ns, name = match.groups()
            return self.lfs_batch(req, REPO_TYPE_BY_PLURAL[plural or "models"], f"{unquote(ns)}/{unquote(name)}")
        if match := re.fullmatch(r"/_lfs/(upload|verify)/(models|datasets|spaces)/([^/]+)/([^/]+)/([0-9a-f]{64})", p):
            action, plural, ns, name, oid = match.groups()
            repo_type, repo_id = REPO_TYPE_BY_PLURAL[plural], f"{unquote(ns)}/{unquote(name)}"
            if action == "upload" and m == "PUT":
                return self.lfs_upload(req, repo_type, repo_id, oid)
            if action == "verify" and m == "POST":
                return self.lfs_verify(req, repo_type, repo_id, oid)
            raise HubError(405, "Method not allowed")
        if match := re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", p):
            if m not in ("GET", "HEAD"):
                raise HubError(405, "Method not allowed")
            plural, ns, name, revision, filename = match.groups()
            return self.resolve(req, REPO_TYPE_BY_PLURAL[plural or "models"], f"{unquote(ns)}/{unquote(name)}",
                                unquote(revision), unquote(filename))
        raise HubError(404, f"Not found: {m} {p}")

    def repo_api(self, req: Request, repo_type: str, repo_id: str, rest: str) -> Response:
        m = req.method
        parts = rest.split("/")[1:] if rest else []
        head, args = (parts[0], parts[1:]) if parts else ("", [])
        if head == "" and m == "GET":
            return self.repo_info(req, repo_type, repo_id, "main")
        if head == "revision" and len(args) >= 1 and m == "GET":
            return self.repo_info(req, repo_type, repo_id, unquote("/".join(args)))
        if head == "tree" and len(args) >= 1 and m == "GET":
            return self.tree(req, repo_type, repo_id, unquote(args[0]), unquote("/".join(args[1:])))
        if head == "paths-info" and len(args) == 1 and m == "POST":
            return self.paths_info(req, repo_type, repo_id, unquote(args[0]))
        if head == "refs" and not args and m == "GET":
            return self.refs(req, repo_type, repo_id)
        if head == "commits" and len(args) == 1 and m == "GET":
            return self.list_commits(req, repo_type, repo_id, unquote(args[0]))
        if head == "branch" and len(args) == 1 and m in ("POST", "DELETE"):
            return self.branch(req, repo_type, repo_id, unquote(args[0]))
        if head == "tag" and len(args) == 1 and m in ("POST", "DELETE"):
            return self.tag(req, repo_type, repo_id, unquote(args[0]))
        if head == "preupload" and len(args) == 1 and m == "POST":
            return self.preupload(req, repo_type, repo_id, unquote(args[0]))
        if head == "commit" and len(args) == 1 and m == "POST":
            return self.commit(req, repo_type, repo_id, unquote(args[0]))
        if head == "settings" and not args and m == "PUT":
            return self.settings(req, repo_type, repo_id)
        raise HubError(404, f"Not found: {m} {req.path}")

    # ---------------------------------------------------------------- account & repos
    def whoami(self, req: Request) -> Response:
        if req.level is None:
            raise unauthorized()
        role = "write" if req.level == "write" else "read"
        return Response.json({
            "type": "user", "id": hashlib.sha1(self.server.user.encode()).hexdigest()[:24], "name": self.server.user,
            "fullname": "Test User", "email": f"{self.server.user}@example.com", "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in self.server.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": f"test {role} token", "role": role,
                                                             "createdAt": "2024-01-01T00:00:00.000Z"}},
        })

    def _repo_type_from_payload(self, payload: dict[str, Any]) -> str:
        repo_type = payload.get("type") or "model"
        if repo_type not in PLURAL_BY_REPO_TYPE:
            raise HubError(400, f"Invalid repo type: {repo_type!r}")
        return repo_type

    def create_repo(self, req: Request) -> Response:
        payload = req.json()
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            raise HubError(400, '"name" is required')
        repo_type = self._repo_type_from_payload(payload)
        namespace = payload.get("organization") or self.server.user
        repo_id = f"{namespace}/{payload['name']}"
        if not is_valid_repo_id(repo_id, require_namespace=True):
            raise HubError(400, f"Invalid repo name: {repo_id!r}. Repo names use alphanumeric chars, '-', '_' or '.', "
                                "cannot start or end with '-' or '.' and are at most 96 characters long")
        self.require_write(req, namespace)
        visibility = payload.get("visibility")
        if visibility not in (None, "public", "private"):
            raise HubError(400, f"Invalid visibility: {visibility!r}")
        private = visibility == "private" or (visibility is None and bool(payload.get("private")))
        url = self.repo_url(repo_type, repo_id)
        meta, created = self.store.create_repo(repo_type, repo_id, private)
        if not created:
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        return Response.json({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, req: Request) -> Response:
        payload = req.json()
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            raise HubError(400, '"name" is required')
        repo_type = self._repo_type_from_payload(payload)
        namespace = payload.get("organization") or self.server.user
        repo_id = f"{namespace}/{payload['name']}"
        self.require_write(req, namespace)
        self.get_repo(req, repo_type, repo_id)
        self.store.delete_repo(repo_type, repo_id)
        return Response.json({})

    def settings(self, req: Request, repo_type: str, repo_id: str) -> Response:
        self.require_write(req, repo_id.split("/")[0])
        meta = self.get_repo(req, repo_type, repo_id)
        payload = req.json()
        if not isinstance(payload, dict):
            raise HubError(400, "Expected a JSON object")
        with self.store.lock:
            meta = self.store.load_repo(repo_type, repo_id)
            if "visibility" in payload:
                if payload["visibility"] not in ("public", "private"):
                    raise HubError(400, f"Invalid visibility: {payload['visibility']!r}")
                meta["private"] = payload["visibility"] == "private"
            if "private" in payload:
                meta["private"] = bool(payload["private"])
            self.store.save_repo(meta)
        return Response.json({"private": meta["private"]})

    # ---------------------------------------------------------------- reading
    def _card_metadata(self, tree: dict[str, Any]) -> dict[str, Any] | None:
        entry = tree.get("README.md")
        if entry is None:
            return None
        try:
            import yaml

            match = _YAML_BLOCK.search(self.store.read_entry(entry).decode("utf-8"))
            data = yaml.safe_load(match.group(2)) if match else None
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    def repo_info(self, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        meta = self.get_repo(req, repo_type, repo_id)
        commit = self.get_commit(meta, revision)
        tree = commit["tree"]
        blobs = req.flag("blobs")
        siblings = []
        for path in sorted(tree):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = tree[path]
                sibling.update({"size": entry["size"], "blobId": entry["oid"]})
                if entry["lfs"]:
                    sibling["lfs"] = {"size": entry["lfs"]["size"], "sha256": entry["lfs"]["oid"],
                                      "pointerSize": entry["lfs"]["pointerSize"]}
            siblings.append(sibling)
        card = self._card_metadata(tree)
        tags: list[str] = []
        if card:
            raw_tags = card.get("tags")
            tags += [raw_tags] if isinstance(raw_tags, str) else [t for t in raw_tags or [] if isinstance(t, str)]
            if isinstance(card.get("library_name"), str):
                tags.append(card["library_name"])
            licenses = card.get("license")
            for lic in [licenses] if isinstance(licenses, str) else licenses or []:
                tags.append(f"license:{lic}")
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24], "id": repo_id,
            "author": repo_id.split("/")[0], "sha": commit["id"], "lastModified": commit["date"],
            "createdAt": meta["createdAt"], "private": meta["private"], "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": tags, "siblings": siblings,
            "usedStorage": sum(e["size"] for e in tree.values()),
        }
        if card is not None:
            info["cardData"] = card
        if repo_type == "model":
            info["modelId"] = repo_id
            if card and isinstance(card.get("pipeline_tag"), str):
                info["pipeline_tag"] = card["pipeline_tag"]
            if card and isinstance(card.get("library_name"), str):
                info["library_name"] = card["library_name"]
        if repo_type == "space":
            info["sdk"] = (card or {}).get("sdk")
        expand = req.query.get("expand") or req.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return Response.json(info)

    def _last_commit(self, meta: dict[str, Any], commit: dict[str, Any], path: str) -> dict[str, Any]:
        def snapshot(c: dict[str, Any]) -> Any:
            return sorted((p, e["oid"]) for p, e in c["tree"].items() if p == path or p.startswith(path + "/"))

        current = commit
        while current["parents"]:
            parent = self.store.load_commit(meta, current["parents"][0])
            if snapshot(parent) != snapshot(current):
                break
            current = parent
        return {"id": current["id"], "title": current["summary"], "date": current["date"]}

    def _tree_entries(self, meta: dict[str, Any], commit: dict[str, Any], paths: list[str], expand: bool,
                      directories: set[str]) -> list[dict[str, Any]]:
        tree, out = commit["tree"], []
        for path in paths:
            if path in directories:
                children = sorted((p, e["oid"]) for p, e in tree.items() if p.startswith(path + "/"))
                oid = hashlib.sha1(json.dumps(children).encode()).hexdigest()
                item: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": path}
            else:
                entry = tree[path]
                item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
                if entry["lfs"]:
                    item["lfs"] = dict(entry["lfs"])
            if expand:
                item["lastCommit"] = self._last_commit(meta, commit, path)
            out.append(item)
        return out

    @staticmethod
    def _directories(tree: dict[str, Any]) -> set[str]:
        dirs = set()
        for path in tree:
            parts = path.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        return dirs

    def tree(self, req: Request, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        meta = self.get_repo(req, repo_type, repo_id)
        commit = self.get_commit(meta, revision)
        tree = commit["tree"]
        directories = self._directories(tree)
        prefix = path.strip("/")
        if prefix and prefix not in directories:
            raise HubError(404, f"Entry not found: {prefix} is not a folder at {revision}", "EntryNotFound",
                           headers={"X-Repo-Commit": commit["id"]})
        base = prefix + "/" if prefix else ""
        candidates = [p for p in sorted(set(tree) | directories) if p.startswith(base)]
        if not req.flag("recursive"):
            candidates = [p for p in candidates if "/" not in p[len(base):]]
        return Response.json(self._tree_entries(meta, commit, candidates, req.flag("expand"), directories))

    def paths_info(self, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        meta = self.get_repo(req, repo_type, repo_id)
        commit = self.get_commit(meta, revision)
        content_type = req.headers.get("Content-Type", "")
        if "json" in content_type:
            payload = req.json() or {}
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand") or ["false"])[-1].lower() == "true"
        if isinstance(paths, str):
            paths = [paths]
        directories = self._directories(commit["tree"])
        found = [p.strip("/") for p in paths if p.strip("/") in commit["tree"] or p.strip("/") in directories]
        return Response.json(self._tree_entries(meta, commit, found, expand, directories))

    def refs(self, req: Request, repo_type: str, repo_id: str) -> Response:
        meta = self.get_repo(req, repo_type, repo_id)
        data: dict[str, Any] = {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in meta["branches"].items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in meta["tags"].items()],
            "converts": [],
        }
        if req.flag("include_prs"):
            data["pullRequests"] = [{"name": n.rsplit("/", 1)[-1], "ref": n, "targetCommit": s}
                                    for n, s in meta["pulls"].items()]
        return Response.json(data)

    def list_commits(self, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        meta = self.get_repo(req, repo_type, repo_id)
        commit = self.get_commit(meta, revision)
        out = []
        while True:
            out.append({"id": commit["id"], "title": commit["summary"], "message": commit["description"],
                        "authors": [{"user": commit["author"], "avatar": ""}], "date": commit["date"]})
            if not commit["parents"]:
                break
            commit = self.store.load_commit(meta, commit["parents"][0])
        return Response.json(out)

    def resolve(self, req: Request, repo_type: str, repo_id: str, revision: str, filename: str) -> Response:
        meta = self.get_repo(req, repo_type, repo_id)
        commit = self.get_commit(meta, revision)
        entry = commit["tree"].get(filename)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit["id"]})
        headers = {
            "ETag": f'"{entry["oid"]}"', "X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes",
            "Content-Type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename.rsplit('/', 1)[-1])}",
        }
        if entry["lfs"]:
            headers["X-Linked-Etag"] = f'"{entry["lfs"]["oid"]}"'
            headers["X-Linked-Size"] = str(entry["lfs"]["size"])
        size = entry["size"]
        if req.method == "HEAD":
            return Response(200, headers, b"", content_length=size)
        content = self.store.read_entry(entry)
        range_header = req.headers.get("Range")
        if range_header and "," not in range_header:
            match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", range_header, flags=re.IGNORECASE)
            if match and (match.group(1) or match.group(2)):
                first, last = match.groups()
                if first:
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                else:
                    start, end = max(size - int(last), 0), size - 1
                if start >= size or start > end:
                    raise HubError(416, f"Requested range not satisfiable: {range_header}",
                                   headers={"Content-Range": f"bytes */{size}", "X-Repo-Commit": commit["id"]})
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                self.server._record_download(repo_id, revision, filename)
                return Response(206, headers, content[start:end + 1])
        self.server._record_download(repo_id, revision, filename)
        return Response(200, headers, content)

    # ---------------------------------------------------------------- refs
    def branch(self, req: Request, repo_type: str, repo_id: str, branch: str) -> Response:
        self.require_write(req, repo_id.split("/")[0])
        self.get_repo(req, repo_type, repo_id)
        if not branch or branch.startswith(("refs/", "/")) or branch.endswith("/") or ".." in branch or any(
                c in branch for c in " ~^:?*[\\") or _COMMIT_SHA.fullmatch(branch):
            raise HubError(400, f"Invalid branch name: {branch!r}")
        with self.store.lock:
            meta = self.store.load_repo(repo_type, repo_id)
            if req.method == "DELETE":
                if branch not in meta["branches"]:
                    raise revision_not_found(branch)
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del meta["branches"][branch]
            else:
                if branch in meta["branches"]:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                payload = req.json() or {}
                starting_point = payload.get("startingPoint") or "main"
                sha = self.store.resolve(meta, starting_point)
                if sha is None:
                    raise revision_not_found(starting_point)
                meta["branches"][branch] = sha
            self.store.save_repo(meta)
        return Response.json({})

    def tag(self, req: Request, repo_type: str, repo_id: str, revision_or_tag: str) -> Response:
        self.require_write(req, repo_id.split("/")[0])
        self.get_repo(req, repo_type, repo_id)
        with self.store.lock:
            meta = self.store.load_repo(repo_type, repo_id)
            if req.method == "DELETE":
                if revision_or_tag not in meta["tags"]:
                    raise revision_not_found(revision_or_tag)
                del meta["tags"][revision_or_tag]
            else:
                payload = req.json() or {}
                tag = payload.get("tag")
                if not isinstance(tag, str) or not tag or any(c in tag for c in " ~^:?*[\\"):
                    raise HubError(400, f"Invalid tag name: {tag!r}")
                if tag in meta["tags"]:
                    raise HubError(409, f"Tag already exists: {tag}")
                sha = self.store.resolve(meta, revision_or_tag)
                if sha is None:
                    raise revision_not_found(revision_or_tag)
                meta["tags"][tag] = sha
            self.store.save_repo(meta)
        return Response.json({})

    # ---------------------------------------------------------------- uploads
    def upload_mode(self, tree: dict[str, Any], path: str, size: int, sample: bytes) -> str:
        if path.endswith(ALWAYS_LFS_SUFFIXES) or size > LFS_SIZE_THRESHOLD or _is_binary(sample):
            return "lfs"
        attributes = tree.get(".gitattributes")
        if attributes is not None:
            is_lfs = False
            rules = _gitattributes_lfs_patterns(self.store.read_entry(attributes).decode(errors="replace"))
            for pattern, value in rules:
                if _pattern_matches(pattern, path):
                    is_lfs = value
            if is_lfs:
                return "lfs"
        return "regular"

    def _writable_branch_commit(self, req: Request, repo_type: str, repo_id: str, revision: str
                                ) -> tuple[dict[str, Any], dict[str, Any]]:
        self.require_write(req, repo_id.split("/")[0])
        meta = self.get_repo(req, repo_type, repo_id)
        if req.flag("create_pr"):
            revision = "main"
        if revision not in meta["branches"] and revision not in meta["pulls"]:
            raise revision_not_found(revision)
        return meta, self.get_commit(meta, revision)

    def preupload(self, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        meta, commit = self._writable_branch_commit(req, repo_type, repo_id, revision)
        payload = req.json()
        files = payload.get("files") if isinstance(payload, dict) else None
        if not isinstance(files, list):
            raise HubError(400, '"files" must be an array')
        tree = commit["tree"]
        gitignore = payload.get("gitIgnore")
        if gitignore is None and ".gitignore" in tree:
            gitignore = self.store.read_entry(tree[".gitignore"]).decode(errors="replace")
        out = []
        for item in files:
            if not isinstance(item, dict) or not isinstance(item.get("size"), int) or item["size"] < 0:
                raise HubError(400, f"Invalid file entry: {item!r}")
            path = _validate_path_in_repo(item.get("path"))
            try:
                sample = base64.b64decode(item.get("sample") or "", validate=True)
            except ValueError:
                raise HubError(400, f"Invalid base64 sample for {path}") from None
            mode = self.upload_mode(tree, path, item["size"], sample)
            existing = tree.get(path)
            oid = None
            if existing is not None:
                if mode == "lfs" and existing["lfs"]:
                    oid = existing["lfs"]["oid"]
                elif mode == "regular" and not existing["lfs"]:
                    oid = existing["oid"]
            out.append({"path": path, "uploadMode": mode, "oid": oid,
                        "shouldIgnore": bool(gitignore) and _gitignore_matches(gitignore, path)})
        return Response.json({"files": out, "commitOid": commit["id"]})

    def _sign(self, repo_type: str, repo_id: str, oid: str, size: int) -> str:
        return hmac.new(self.secret, f"{repo_type}/{repo_id}/{oid}/{size}".encode(), hashlib.sha256).hexdigest()

    def lfs_batch(self, req: Request, repo_type: str, repo_id: str) -> Response:
        self.require_write(req, repo_id.split("/")[0])
        meta = self.get_repo(req, repo_type, repo_id)
        payload = req.json()
        if not isinstance(payload, dict) or payload.get("operation") != "upload":
            raise HubError(400, 'Only {"operation": "upload"} is supported by this server')
        if payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(400, "Only the sha256 hash algorithm is supported")
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, '"objects" must be an array')
        transfers = payload.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise HubError(400, f"None of the transfers {transfers} is supported (only 'basic')")
        ref = (payload.get("ref") or {}).get("name")
        if ref is not None and self.store.resolve(meta, ref) is None:
            raise revision_not_found(ref)
        out = []
        base = f"{self.server.url}/_lfs/{{}}/{PLURAL_BY_REPO_TYPE[repo_type]}/{repo_id}/"
        for obj in objects:
            oid, size = (obj.get("oid"), obj.get("size")) if isinstance(obj, dict) else (None, None)
            if not isinstance(oid, str) or not _SHA256.fullmatch(oid) or not isinstance(size, int) or size < 0:
                out.append({"oid": str(oid), "size": size if isinstance(size, int) else -1,
                            "error": {"code": 422, "message": "Invalid object: oid must be a sha256, size an int"}})
                continue
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in meta["lfs"] or not self.store.has_lfs(oid):
                signature = self._sign(repo_type, repo_id, oid, size)
                item["actions"] = {
                    "upload": {"href": base.format("upload") + f"{oid}?size={size}&sig={signature}", "expires_in": 900},
                    "verify": {"href": base.format("verify") + oid, "expires_in": 900},
                }
            out.append(item)
        return Response(200, {"Content-Type": "application/vnd.git-lfs+json"},
                        json.dumps({"transfer": "basic", "objects": out, "hash_algo": "sha256"}).encode())

    def lfs_upload(self, req: Request, repo_type: str, repo_id: str, oid: str) -> Response:
        size_q, sig = (req.query.get("size") or [""])[-1], (req.query.get("sig") or [""])[-1]
        if not size_q.isdigit() or not hmac.compare_digest(sig, self._sign(repo_type, repo_id, oid, int(size_q))):
            raise HubError(403, "SignatureDoesNotMatch: the upload URL is invalid or was tampered with")
        if len(req.body) != int(size_q):
            raise HubError(400, f"Size mismatch: announced {size_q} bytes, received {len(req.body)}")
        actual = hashlib.sha256(req.body).hexdigest()
        if actual != oid:
            raise HubError(400, f"Checksum mismatch: announced sha256 {oid}, received content has sha256 {actual}")
        self.store.put_lfs(req.body)
        with self.store.lock:
            meta = self.store.load_repo(repo_type, repo_id)
            if meta is None:
                raise repo_not_found(repo_id)
            if oid not in meta["lfs"]:
                meta["lfs"].append(oid)
                self.store.save_repo(meta)
        self.server._record_lfs_upload(repo_id, oid)
        return Response(200, {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'}, b"")

    def lfs_verify(self, req: Request, repo_type: str, repo_id: str, oid: str) -> Response:
        self.require_write(req, repo_id.split("/")[0])
        meta = self.get_repo(req, repo_type, repo_id)
        payload = req.json()
        if not isinstance(payload, dict) or payload.get("oid") != oid or not isinstance(payload.get("size"), int):
            raise HubError(400, 'Expected {"oid": <the sha256 of the URL>, "size": <int>}')
        path = self.store.root / "objects" / "lfs" / oid
        if oid not in meta["lfs"] or not path.is_file():
            raise HubError(404, f"LFS object {oid} was not uploaded")
        if path.stat().st_size != payload["size"]:
            raise HubError(400, f"LFS object {oid} has size {path.stat().st_size}, not {payload['size']}")
        self.server._record_lfs_verify(oid)
        return Response.json({"success": True})

    def commit(self, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        meta, _ = self._writable_branch_commit(req, repo_type, repo_id, revision)
        lines = []
        for raw in req.body.splitlines():
            if raw.strip():
                try:
                    lines.append(json.loads(raw))
                except ValueError as err:
                    raise HubError(400, f"Malformed NDJSON line: {err}") from None
        if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
            raise HubError(400, "The first NDJSON line must be the commit header")
        header = lines[0].get("value") or {}
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, '"summary" is required')
        description = header.get("description") or ""
        parent = header.get("parentCommit")
        if parent is not None and not re.fullmatch(r"[0-9a-f]{5,40}", str(parent)):
            raise HubError(400, f"Invalid parentCommit: {parent!r}")
        ops: list[tuple[str, str, Any]] = []
        for line in lines[1:]:
            key, value = (line.get("key"), line.get("value")) if isinstance(line, dict) else (None, None)
            if not isinstance(value, dict):
                raise HubError(400, f"Malformed commit operation: {line!r}")
            path = _validate_path_in_repo(value.get("path") if key != "deletedFolder" else
                                          str(value.get("path", "")).rstrip("/"))
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    content = str(value.get("content", "")).encode()
                else:
                    try:
                        content = base64.b64decode(value.get("content") or "", validate=True)
                    except ValueError:
                        raise HubError(400, f"Invalid base64 content for {path}") from None
                if (path.endswith(ALWAYS_LFS_SUFFIXES) and content) or len(content) > LFS_SIZE_THRESHOLD \
                        or _is_binary(content[:8000]):
                    raise HubError(400, f"Your push was rejected because it contains binary files or files larger "
                                        f"than 10MB sent as regular files ({path}). Please use LFS.")
                ops.append(("file", path, self.store.tree_entry(content, lfs=False)))
            elif key == "lfsFile":
                oid = value.get("oid")
                if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not _SHA256.fullmatch(oid):
                    raise HubError(400, f"Invalid LFS pointer for {path}")
                lfs_path = self.store.root / "objects" / "lfs" / oid
                if oid not in meta["lfs"] or not lfs_path.is_file():
                    raise HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that does "
                                        f"not exist ({path}: {oid})")
                size = lfs_path.stat().st_size
                if value.get("size") is not None and value["size"] != size:
                    raise HubError(400, f"LFS pointer size {value['size']} for {path} does not match the object ({size})")
                pointer = lfs_pointer(oid, size)
                ops.append(("lfs", path, {"size": size, "oid": git_blob_oid(pointer),
                                          "lfs": {"oid": oid, "size": size, "pointerSize": len(pointer)}}))
            elif key == "deletedFile":
                ops.append(("delete", path, None))
            elif key == "deletedFolder":
                ops.append(("deleteFolder", path, None))
            else:
                raise HubError(400, f"Unknown commit operation key: {key!r}")
        branch = revision
        pr_url = None
        if req.flag("create_pr"):
            with self.store.lock:
                meta = self.store.load_repo(repo_type, repo_id)
                number = len(meta["pulls"]) + 1
                branch = f"refs/pr/{number}"
                meta["pulls"][branch] = meta["branches"]["main"]
                self.store.save_repo(meta)
            pr_url = f"{self.repo_url(repo_type, repo_id)}/discussions/{number}"
        sha = self.store.commit(meta, branch, summary, description, ops, parent_commit=parent)
        return Response.json({"success": True, "commitOid": sha, "pullRequestUrl": pr_url, "hookOutput": "",
                              "commitUrl": f"{self.repo_url(repo_type, repo_id)}/commit/{sha}"})

    # ---------------------------------------------------------------- metadata validation
    def validate_yaml(self, req: Request) -> Response:
        payload = req.json()
        if not isinstance(payload, dict) or not isinstance(payload.get("content"), str):
            raise HubError(400, '"content" must be a string')
        repo_type = payload.get("repoType") or "model"
        if repo_type not in PLURAL_BY_REPO_TYPE:
            raise HubError(400, '"repoType" must be one of [model, dataset, space]')
        errors, warnings = validate_card_metadata(payload["content"], repo_type)
        self.server._record_yaml_validation(payload["content"], repo_type, errors, warnings)
        warning_items = [{"message": w} for w in warnings]
        if not errors:
            return Response.json({"errors": [], "warnings": warning_items})
        accept = req.headers.get("Accept", "")
        if "text/plain" in accept and "json" not in accept:  # what ModelCard.validate asks for
            text = "\n".join(f"- Error: {e}" for e in errors)
            return Response(400, {"Content-Type": "text/plain; charset=utf-8"}, text.encode())
        return Response.json({"error": "\n".join(errors), "errors": [{"message": e} for e in errors],
                              "warnings": warning_items}, status=400)


def _strings(value: Any) -> list[Any] | None:
    """A str or a list → list; anything else → None."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    return None


def validate_card_metadata(content: str, repo_type: str) -> tuple[list[str], list[str]]:
    """A realistic subset of the Hub's README metadata validation; returns (errors, warnings) as Joi-style messages."""
    match = _YAML_BLOCK.search(content)
    if match is None:
        return [], [EMPTY_METADATA_WARNING]
    import yaml  # PyYAML ships with huggingface_hub; only the metadata check needs it

    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as err:
        return [f"Invalid YAML in README.md metadata: {err}".replace("\n", " ")], []
    if data is None:
        return [], [EMPTY_METADATA_WARNING]
    if not isinstance(data, dict):
        return ['"value" must be of type object'], []
    errors: list[str] = []

    def check_list_of_strings(key: str) -> list[Any]:
        if key not in data or data[key] is None:
            return []
        items = _strings(data[key])
        if items is None:
            errors.append(f'"{key}" must be one of [string, array]')
            return []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                errors.append(f'"{key}[{i}]" must be a string' if isinstance(data[key], list) else f'"{key}" must be a string')
        return items

    def label(key: str, i: int) -> str:
        return f"{key}[{i}]" if isinstance(data[key], list) else key

    for i, lic in enumerate(check_list_of_strings("license")):
        if isinstance(lic, str) and lic not in KNOWN_LICENSES:
            errors.append(f'"{label("license", i)}" must be one of [{", ".join(KNOWN_LICENSES)}]')
    for key, kind in (("base_model", "model"), ("datasets", "dataset")):
        for i, value in enumerate(check_list_of_strings(key)):
            if isinstance(value, str) and not is_valid_repo_id(value):
                errors.append(f'"{label(key, i)}" with value "{value}" is not a valid {kind} id: expected a Hub repo id '
                              f'like "namespace/name" (local paths are not allowed)')
    for key in ("tags", "language", "metrics"):
        check_list_of_strings(key)
    if "library_name" in data and not isinstance(data["library_name"], str):
        errors.append('"library_name" must be a string')
    if repo_type == "model" and "pipeline_tag" in data:
        tag = data["pipeline_tag"]
        if not isinstance(tag, str):
            errors.append('"pipeline_tag" must be a string')
        elif tag not in KNOWN_PIPELINE_TAGS:
            errors.append(f'"pipeline_tag" must be one of [{", ".join(KNOWN_PIPELINE_TAGS)}]')
    if repo_type == "dataset":
        for i, cat in enumerate(check_list_of_strings("task_categories")):
            if isinstance(cat, str) and cat not in KNOWN_PIPELINE_TAGS:
                errors.append(f'"{label("task_categories", i)}" must be one of [{", ".join(KNOWN_PIPELINE_TAGS)}]')
    if repo_type == "space":
        if "sdk" in data and data["sdk"] not in SPACE_SDKS:
            errors.append(f'"sdk" must be one of [{", ".join(SPACE_SDKS)}]')
        for key in ("colorFrom", "colorTo"):
            if key in data and data[key] not in SPACE_COLORS:
                errors.append(f'"{key}" must be one of [{", ".join(SPACE_COLORS)}]')
    if "model-index" in data:
        errors.extend(_model_index_errors(data["model-index"]))
    return errors, []


def _model_index_errors(index: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(index, list):
        return ['"model-index" must be an array']

    def need_str(obj: dict[str, Any], key: str, where: str, required: bool = True) -> None:
        if key not in obj or obj[key] is None:
            if required:
                errors.append(f'"{where}.{key}" is required')
        elif not isinstance(obj[key], str):
            errors.append(f'"{where}.{key}" must be a string')

    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(model, dict):
            errors.append(f'"{where}" must be of type object')
            continue
        need_str(model, "name", where)
        results = model.get("results")
        if not isinstance(results, list):
            errors.append(f'"{where}.results" is required' if results is None else f'"{where}.results" must be an array')
            continue
        for j, result in enumerate(results):
            rwhere = f"{where}.results[{j}]"
            if not isinstance(result, dict):
                errors.append(f'"{rwhere}" must be of type object')
                continue
            task = result.get("task")
            if not isinstance(task, dict):
                errors.append(f'"{rwhere}.task" is required' if task is None else f'"{rwhere}.task" must be of type object')
            else:
                need_str(task, "type", f"{rwhere}.task")
                need_str(task, "name", f"{rwhere}.task", required=False)
            dataset = result.get("dataset")
            if not isinstance(dataset, dict):
                errors.append(f'"{rwhere}.dataset" is required' if dataset is None
                              else f'"{rwhere}.dataset" must be of type object')
            else:
                need_str(dataset, "type", f"{rwhere}.dataset")
                need_str(dataset, "name", f"{rwhere}.dataset")
            metrics = result.get("metrics")
            if not isinstance(metrics, list):
                errors.append(f'"{rwhere}.metrics" is required' if metrics is None else f'"{rwhere}.metrics" must be an array')
                continue
            for k, metric in enumerate(metrics):
                mwhere = f"{rwhere}.metrics[{k}]"
                if not isinstance(metric, dict):
                    errors.append(f'"{mwhere}" must be of type object')
                    continue
                need_str(metric, "type", mwhere)
                if "value" not in metric or metric["value"] is None:
                    errors.append(f'"{mwhere}.value" is required')
    return errors


# --------------------------------------------------------------------------------------------- http layer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hfadapt-test-hub/1.0"
    timeout = 60  # idle keep-alive connections don't pin a thread forever

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        req = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True), self.headers, b"")
        try:
            req.body = self._read_body()
            response = hub.app.handle(req)
        except HubError as err:
            response = err.response()
        except Exception:  # a bug in this server: report it loudly (the client retries 500s, so also log it)
            hub.server_errors.append(f"{self.command} {self.path}\n{traceback.format_exc()}")
            print(f"[hub_server] internal error on {self.command} {self.path}\n{traceback.format_exc()}",
                  file=sys.stderr)
            response = HubError(500, "Internal error in the test Hub server (see hub_server.server_errors)").response()
        request_id = self.headers.get("X-Request-Id") or self.headers.get("X-Amzn-Trace-Id")
        if request_id:
            response.headers.setdefault("X-Request-Id", request_id)
        hub._record_request(self.command, split.path, split.query, response.status, req.level)
        try:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            length = response.content_length if response.content_length is not None else len(response.body)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command != "HEAD" and response.body:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # requests are recorded in HubServer.requests
        pass


class HubServer:
    """A running Hub-compatible server and the handle tests use to inspect what it stored.

    Attributes: url (= endpoint = HF_ENDPOINT for the fixture), token (write token), read_token (can read
    private repos, cannot write), user ("test-user") and orgs (("test-org",)) — the namespaces the write
    token may create/write in —, storage_root, port, requests (log of {method, path, query, status, auth}),
    server_errors (tracebacks of bugs in this server; should stay empty).

    Inspection: files(), tree(), commits(), resolve(), branches(), tags(), repo(), repo_exists(), is_private(),
    lfs_objects, lfs_verified, lfs_uploads, lfs_object(), yaml_validations, downloads.
    Mutation: seed() (server-side commit, no client), reset() (wipe everything).
    Standalone use: `with HubServer(tmp_dir) as hub:` (port 0 = any free port; pass endpoint=hub.url).
    """

    def __init__(self, storage_root: str | Path, port: int = 0, host: str = "127.0.0.1", *,
                 token: str = WRITE_TOKEN, read_token: str = READ_TOKEN, user: str = USER,
                 orgs: tuple[str, ...] = ORGS):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the test Hub binds to the loopback interface only")
        self.storage_root = Path(storage_root)
        self.token, self.read_token, self.user, self.orgs = token, read_token, user, tuple(orgs)
        self.host, self.port = host, port
        self.store = HubStore(self.storage_root)
        self.app = HubApp(self.store, self)
        self.requests: list[dict[str, Any]] = []
        self.server_errors: list[str] = []
        self._yaml_validations: list[dict[str, Any]] = []
        self._lfs_uploads: list[dict[str, str]] = []
        self._lfs_verified: set[str] = set()
        self._downloads: list[dict[str, str]] = []
        self._log_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    endpoint = url

    def start(self) -> "HubServer":
        httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"test-hub-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- recording (called by the app)
    def _record_request(self, method: str, path: str, query: str, status: int, level: str | None) -> None:
        with self._log_lock:
            self.requests.append({"method": method, "path": unquote(path), "query": query, "status": status,
                                  "auth": level})

    def _record_yaml_validation(self, content: str, repo_type: str, errors: list[str], warnings: list[str]) -> None:
        with self._log_lock:
            self._yaml_validations.append({"content": content, "repo_type": repo_type, "valid": not errors,
                                           "errors": list(errors), "warnings": list(warnings)})

    def _record_lfs_upload(self, repo_id: str, oid: str) -> None:
        with self._log_lock:
            self._lfs_uploads.append({"repo_id": repo_id, "oid": oid})

    def _record_lfs_verify(self, oid: str) -> None:
        with self._log_lock:
            self._lfs_verified.add(oid)

    def _record_download(self, repo_id: str, revision: str, path: str) -> None:
        with self._log_lock:
            self._downloads.append({"repo_id": repo_id, "revision": revision, "path": path})

    # -- inspection helpers for assertions
    @property
    def lfs_objects(self) -> set[str]:
        """sha256 of every object whose content arrived through the LFS batch → PUT path (checked on arrival)."""
        with self._log_lock:
            return {u["oid"] for u in self._lfs_uploads}

    @property
    def lfs_verified(self) -> set[str]:
        """sha256 of every object the client then confirmed through the LFS verify call."""
        with self._log_lock:
            return set(self._lfs_verified)

    @property
    def lfs_uploads(self) -> list[dict[str, str]]:
        """[{repo_id, oid}] in arrival order (an object uploaded twice appears twice)."""
        with self._log_lock:
            return list(self._lfs_uploads)

    @property
    def yaml_validations(self) -> list[dict[str, Any]]:
        """[{content, repo_type, valid, errors, warnings}] for each POST /api/validate-yaml, in order."""
        with self._log_lock:
            return list(self._yaml_validations)

    @property
    def downloads(self) -> list[dict[str, str]]:
        """[{repo_id, revision, path}] for each GET of /resolve that returned content."""
        with self._log_lock:
            return list(self._downloads)

    def lfs_object(self, sha256: str) -> bytes:
        return (self.storage_root / "objects" / "lfs" / sha256).read_bytes()

    def _meta(self, repo_id: str, repo_type: str) -> dict[str, Any]:
        meta = self.store.load_repo(repo_type, repo_id) if is_valid_repo_id(repo_id, require_namespace=True) else None
        if meta is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on the test Hub")
        return meta

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        return is_valid_repo_id(repo_id, require_namespace=True) and self.store.load_repo(repo_type, repo_id) is not None

    def repo(self, repo_id: str, repo_type: str = "model") -> dict[str, Any]:
        """The stored repo record: {id, type, private, createdAt, branches, tags, pulls, lfs, commits}."""
        return self._meta(repo_id, repo_type)

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        return bool(self._meta(repo_id, repo_type)["private"])

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        return dict(self._meta(repo_id, repo_type)["branches"])

    def tags(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        return dict(self._meta(repo_id, repo_type)["tags"])

    def resolve(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """Commit sha of a branch/tag/sha (KeyError if unknown)."""
        sha = self.store.resolve(self._meta(repo_id, repo_type), revision)
        if sha is None:
            raise KeyError(f"unknown revision {revision!r} of {repo_id!r}")
        return sha

    def tree(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, dict[str, Any]]:
        """path -> {size, oid (git blob id; of the pointer for LFS), lfs: None | {oid (sha256), size, pointerSize}}."""
        meta = self._meta(repo_id, repo_type)
        return self.store.load_commit(meta, self.resolve(repo_id, revision, repo_type))["tree"]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The content of every file of the repo at `revision` (branch, tag or commit sha)."""
        return {path: self.store.read_entry(entry) for path, entry in self.tree(repo_id, revision, repo_type).items()}

    def commits(self, repo_id: str, repo_type: str = "model") -> list[HubCommit]:
        """Every commit of the repo (all branches), oldest first; the first one is the Hub's "initial commit"."""
        meta = self._meta(repo_id, repo_type)
        return [HubCommit.from_json(self.store.load_commit(meta, sha)) for sha in meta["commits"]]

    def seed(self, repo_id: str, files: dict[str, bytes | str], *, private: bool = False, revision: str = "main",
             message: str = "seed", repo_type: str = "model") -> str:
        """Create the repo if needed and commit `files` server-side (no client involved); returns the commit sha.

        LFS vs regular follows the preupload rule; seeded LFS objects are not added to `lfs_objects`."""
        if not is_valid_repo_id(repo_id, require_namespace=True):
            raise ValueError(f"invalid repo id {repo_id!r}")
        meta, _ = self.store.create_repo(repo_type, repo_id, private)
        tree = self.store.load_commit(meta, self.store.resolve(meta, revision) or meta["branches"]["main"])["tree"]
        ops = []
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else bytes(content)
            lfs = self.app.upload_mode(tree, _validate_path_in_repo(path), len(data), data[:512]) == "lfs" and bool(data)
            entry = self.store.tree_entry(data, lfs=lfs)
            if lfs and entry["lfs"]["oid"] not in meta["lfs"]:
                meta["lfs"].append(entry["lfs"]["oid"])
            ops.append(("lfs" if lfs else "file", path, entry))
        with self.store.lock:
            self.store.save_repo(meta)
            return self.store.commit(meta, revision, message, "", ops)

    def reset(self) -> None:
        """Delete every repo and object and clear the logs (the server keeps running, same tokens)."""
        with self.store.lock, self._log_lock:
            shutil.rmtree(self.storage_root / "repos", ignore_errors=True)
            shutil.rmtree(self.storage_root / "objects", ignore_errors=True)
            for sub in ("objects/git", "objects/lfs", "objects/tmp", "repos"):
                (self.storage_root / sub).mkdir(parents=True, exist_ok=True)
            self.requests.clear()
            self._yaml_validations.clear()
            self._lfs_uploads.clear()
            self._lfs_verified.clear()
            self._downloads.clear()
            self.server_errors.clear()


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """The Hub-compatible server on 127.0.0.1:HUB_PORT (= HF_ENDPOINT), for the whole session."""
    conftest = sys.modules.get("tests.conftest")
    if conftest is None:
        from tests import conftest  # noqa: F811
    port = conftest.HUB_PORT
    endpoint = os.environ.get("HF_ENDPOINT", "")
    if endpoint.rstrip("/") != f"http://127.0.0.1:{port}":
        raise RuntimeError(f"HF_ENDPOINT={endpoint!r} does not point at the test Hub port {port}")
    client_constants = sys.modules.get("huggingface_hub.constants")
    if client_constants is not None and client_constants.ENDPOINT.rstrip("/") != endpoint.rstrip("/"):
        raise RuntimeError(f"huggingface_hub was imported with ENDPOINT={client_constants.ENDPOINT!r}, "
                           f"not the test Hub {endpoint!r}")
    server = HubServer(tmp_path_factory.mktemp("hub-server"), port=port).start()
    try:
        yield server
    finally:
        server.stop()
