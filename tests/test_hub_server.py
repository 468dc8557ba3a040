"""The test Hub (tests/hub_server.py) driven by the real huggingface_hub client over real HTTP.

Every repo name carries a random suffix: the server lives for the whole session and other test
modules use it too, so nothing here resets it (reset() is exercised on a private instance).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    BadRequestError,
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

from tests.hub_server import HubServer

WEIGHTS = hashlib.sha256(b"weights").digest() * 2048 + bytes(range(256))  # 65 KiB, binary (has NUL bytes)
CONFIG = json.dumps({"model_type": "bert", "hidden_size": 32}, indent=2).encode()
README = b"---\nlicense: apache-2.0\nbase_model: test-org/tiny-base\nlibrary_name: peft\n" \
         b"pipeline_tag: text-classification\ntags:\n- lora\n---\n\n# Adapter\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(hub_server: HubServer) -> HfApi:
    return HfApi(token=hub_server.token)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(WEIGHTS)
    (folder / "adapter_config.json").write_bytes(CONFIG)
    (folder / "README.md").write_bytes(README)
    return folder


@pytest.fixture
def pushed(api: HfApi, hub_server: HubServer, model_dir: Path) -> tuple[str, str]:
    """A public repo holding model_dir, pushed with upload_folder; returns (repo_id, commit sha)."""
    repo_id = api.create_repo(unique("adapter")).repo_id
    info = api.upload_folder(repo_id=repo_id, folder_path=model_dir, commit_message="Add adapter")
    return repo_id, info.oid


def test_whoami_and_create_repo(api: HfApi, hub_server: HubServer) -> None:
    assert api.whoami()["name"] == hub_server.user
    name = unique("created")
    url = api.create_repo(name)
    assert url.repo_id == f"{hub_server.user}/{name}" and url.startswith(hub_server.url)
    assert api.create_repo(name, exist_ok=True).repo_id == url.repo_id  # 409 swallowed by the client
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(name)
    assert err.value.response.status_code == 409
    # A new Hub repo holds the "initial commit" with the default .gitattributes.
    assert list(hub_server.files(url.repo_id)) == [".gitattributes"]
    assert [c.message for c in hub_server.commits(url.repo_id)] == ["initial commit"]
    assert not hub_server.is_private(url.repo_id)
    org_repo = api.create_repo(f"test-org/{unique('org')}", private=True).repo_id
    assert hub_server.is_private(org_repo)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(f"someone-else/{unique('nope')}")
    assert err.value.response.status_code == 403


def test_upload_folder_goes_through_lfs_and_downloads_back(
    api: HfApi, hub_server: HubServer, pushed: tuple[str, str], tmp_path: Path
) -> None:
    repo_id, sha = pushed
    weights_sha256 = hashlib.sha256(WEIGHTS).hexdigest()

    last = hub_server.commits(repo_id)[-1]
    assert last.id == sha and last.message == "Add adapter"
    assert last.lfs_files == ("adapter_model.safetensors",)
    assert sorted(last.regular_files) == ["README.md", "adapter_config.json"]
    assert weights_sha256 in hub_server.lfs_objects and weights_sha256 in hub_server.lfs_verified
    assert hub_server.lfs_object(weights_sha256) == WEIGHTS
    assert hub_server.tree(repo_id)["adapter_model.safetensors"]["lfs"]["oid"] == weights_sha256
    assert hub_server.files(repo_id)["README.md"] == README
    assert [v for v in hub_server.yaml_validations if v["content"] == README.decode()][-1]["valid"]

    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "README.md", "adapter_config.json",
                                                    "adapter_model.safetensors"]
    info = api.model_info(repo_id, files_metadata=True)
    assert info.sha == sha and info.private is False
    assert info.pipeline_tag == "text-classification" and info.library_name == "peft"
    assert info.card_data.base_model == "test-org/tiny-base"
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["adapter_model.safetensors"].lfs.sha256 == weights_sha256
    assert siblings["adapter_model.safetensors"].size == len(WEIGHTS)
    assert siblings["adapter_config.json"].lfs is None

    cache = tmp_path / "cache"
    weights_path = hf_hub_download(repo_id, "adapter_model.safetensors", cache_dir=cache)
    config_path = hf_hub_download(repo_id, "adapter_config.json", cache_dir=cache)
    assert Path(weights_path).read_bytes() == WEIGHTS and Path(config_path).read_bytes() == CONFIG
    assert f"/snapshots/{sha}/" in weights_path
    assert os.path.basename(os.path.realpath(weights_path)) == weights_sha256  # blob named by X-Linked-Etag

    snapshot = Path(snapshot_download(repo_id, cache_dir=tmp_path / "snap"))
    assert snapshot.name == sha
    assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == hub_server.files(repo_id)
    assert not hub_server.server_errors


def test_second_commit_keeps_old_revision(api: HfApi, hub_server: HubServer, pushed: tuple[str, str],
                                          tmp_path: Path) -> None:
    repo_id, first = pushed
    new_config = CONFIG.replace(b"32", b"64")
    second = api.upload_file(path_or_fileobj=new_config, path_in_repo="adapter_config.json", repo_id=repo_id,
                             commit_message="Bigger").oid
    assert second != first and hub_server.resolve(repo_id) == second
    assert hub_server.commits(repo_id)[-1].regular_files == ("adapter_config.json",)
    assert Path(hf_hub_download(repo_id, "adapter_config.json", cache_dir=tmp_path)).read_bytes() == new_config
    old = hf_hub_download(repo_id, "adapter_config.json", revision=first, cache_dir=tmp_path)
    assert Path(old).read_bytes() == CONFIG
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [second, first]

    # Unchanged content: preupload reports the remote oid, the client skips the file and makes no commit.
    same = api.upload_file(path_or_fileobj=new_config, path_in_repo="adapter_config.json", repo_id=repo_id,
                           commit_message="noop")
    assert same.oid == second and len(hub_server.commits(repo_id)) == 3

    gone = api.create_commit(repo_id, [CommitOperationDelete("README.md")], commit_message="Drop card").oid
    assert "README.md" not in hub_server.files(repo_id) and "README.md" in hub_server.files(repo_id, first)
    assert hub_server.commits(repo_id)[-1].deleted_files == ("README.md",)
    assert api.model_info(repo_id).sha == gone


def test_branch_and_upload_to_it(api: HfApi, hub_server: HubServer, pushed: tuple[str, str],
                                 tmp_path: Path) -> None:
    repo_id, main_sha = pushed
    api.create_branch(repo_id, branch="experiment")
    api.create_branch(repo_id, branch="experiment", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch(repo_id, branch="experiment")
    assert err.value.response.status_code == 409
    weights2 = WEIGHTS[::-1]
    api.upload_file(path_or_fileobj=weights2, path_in_repo="adapter_model.safetensors", repo_id=repo_id,
                    revision="experiment", commit_message="Retrain")
    assert hub_server.resolve(repo_id) == main_sha  # main untouched
    assert hub_server.files(repo_id, "experiment")["adapter_model.safetensors"] == weights2
    assert hub_server.commits(repo_id)[-1].branch == "experiment"
    assert hashlib.sha256(weights2).hexdigest() in hub_server.lfs_objects
    got = hf_hub_download(repo_id, "adapter_model.safetensors", revision="experiment", cache_dir=tmp_path)
    assert Path(got).read_bytes() == weights2
    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "experiment"}
    api.create_tag(repo_id, tag="v1", revision=main_sha)
    assert Path(hf_hub_download(repo_id, "adapter_model.safetensors", revision="v1",
                                cache_dir=tmp_path)).read_bytes() == WEIGHTS
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="no-such-branch")


def test_private_repo_is_invisible_without_token(api: HfApi, hub_server: HubServer, model_dir: Path,
                                                 tmp_path: Path) -> None:
    repo_id = api.create_repo(unique("private"), private=True).repo_id
    api.upload_folder(repo_id=repo_id, folder_path=model_dir, commit_message="secret")
    anonymous = HfApi(token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "adapter_config.json", cache_dir=tmp_path / "a", token=False)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(repo_id, cache_dir=tmp_path / "b", token=False)
    assert not anonymous.repo_exists(repo_id) and api.repo_exists(repo_id)
    assert api.model_info(repo_id).private is True
    got = hf_hub_download(repo_id, "adapter_config.json", cache_dir=tmp_path / "c", token=hub_server.token)
    assert Path(got).read_bytes() == CONFIG
    reader = HfApi(token=hub_server.read_token)  # a read token sees it but cannot write
    assert reader.model_info(repo_id).private is True
    with pytest.raises(HfHubHTTPError) as err:
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert err.value.response.status_code == 403


def test_errors_raise_the_client_exception_classes(api: HfApi, hub_server: HubServer, pushed: tuple[str, str],
                                                   tmp_path: Path) -> None:
    repo_id, _ = pushed
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{hub_server.user}/{unique('missing')}")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{hub_server.user}/{unique('missing')}", "config.json", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "adapter_config.json", revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "nope.bin", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="no/such/folder"))
    assert not api.file_exists(repo_id, "nope.bin") and api.file_exists(repo_id, "README.md")

    # Writes need the write token: none → 401, an unknown one → 401 (on reads too).
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=False).create_repo(unique("anon"))
    assert err.value.response.status_code == 401
    assert "Invalid credentials in Authorization header" in str(err.value)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=False).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_not_a_token").model_info(repo_id)
    assert err.value.response.status_code == 401
    assert hub_server.commits(repo_id)[-1].message == "Add adapter"  # nothing got through


def test_model_card_validation(api: HfApi, hub_server: HubServer, tmp_path: Path) -> None:
    ModelCard(README.decode()).validate()  # the card the other tests push
    good = "---\nlicense: mit\nbase_model: [org/a, b]\ndatasets:\n- imdb\n- org/reviews\nmodel-index:\n" \
           "- name: m\n  results:\n  - task: {type: text-classification}\n    dataset: {type: imdb, name: IMDB}\n" \
           "    metrics:\n    - {type: accuracy, value: 0.9}\n---\ntext\n"
    ModelCard(good).validate()
    assert hub_server.yaml_validations[-1]["valid"]

    bad = {
        "base_model: /tmp/local/path": '"base_model" with value "/tmp/local/path"',
        "base_model: ../checkpoints/run1": '"base_model" with value "../checkpoints/run1"',
        "base_model: 'C:\\models\\base'": '"base_model" with value "C:\\models\\base"',
        "datasets: [./data.csv]": '"datasets[0]" with value "./data.csv"',
        "license: not-a-license": '"license" must be one of',
        "pipeline_tag: text-magic": '"pipeline_tag" must be one of',
        "library_name: [peft]": '"library_name" must be a string',
    }
    for line, expected in bad.items():
        with pytest.raises(ValueError) as err:  # ModelCard.validate: ValueError(response.text) on a 400
            ModelCard(f"---\n{line}\n---\ntext\n").validate()
        assert f"- Error: {expected}" in str(err.value), (line, str(err.value))
        assert not hub_server.yaml_validations[-1]["valid"]

    # Through HfApi (upload_folder/upload_file check README.md before uploading anything): JSON errors → ValueError.
    repo_id = api.create_repo(unique("badcard")).repo_id
    before = len(hub_server.requests)
    with pytest.raises(ValueError, match="Invalid metadata in README.md") as err:
        api.upload_file(path_or_fileobj=b"---\nbase_model: /tmp/local/path\n---\n", path_in_repo="README.md",
                        repo_id=repo_id)
    assert isinstance(err.value.__cause__, BadRequestError) and "/tmp/local/path" in str(err.value)
    assert [r["path"] for r in hub_server.requests[before:]] == ["/api/validate-yaml"]
    assert list(hub_server.files(repo_id)) == [".gitattributes"]
    # A malformed model-index never leaves ModelCard (its parser refuses it, and ignore_metadata_errors drops it
    # before sending), so it is checked on the raw README that upload_file sends.
    bad_index = b"---\nmodel-index: [{name: m, results: [{task: {}, metrics: [{type: acc}]}]}]\n---\n"
    with pytest.raises(ValueError) as err:
        api.upload_file(path_or_fileobj=bad_index, path_in_repo="README.md", repo_id=repo_id)
    for problem in ('"model-index[0].results[0].task.type" is required',
                    '"model-index[0].results[0].dataset" is required',
                    '"model-index[0].results[0].metrics[0].value" is required'):
        assert problem in str(err.value)
    with pytest.warns(UserWarning, match="empty or missing yaml metadata"):
        api.upload_file(path_or_fileobj=b"# no metadata\n", path_in_repo="README.md", repo_id=repo_id)


def test_file_metadata_headers_and_range(hub_server: HubServer, pushed: tuple[str, str]) -> None:
    repo_id, sha = pushed
    lfs_meta = get_hf_file_metadata(hf_hub_url(repo_id, "adapter_model.safetensors"))
    assert lfs_meta.commit_hash == sha and lfs_meta.size == len(WEIGHTS)
    assert lfs_meta.etag == hashlib.sha256(WEIGHTS).hexdigest()
    regular = get_hf_file_metadata(hf_hub_url(repo_id, "adapter_config.json", revision=sha))
    assert regular.etag == hub_server.tree(repo_id)["adapter_config.json"]["oid"] and regular.size == len(CONFIG)

    url = hf_hub_url(repo_id, "adapter_model.safetensors")
    part = get_session().get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == WEIGHTS[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(WEIGHTS)}"
    assert get_session().get(url, headers={"Range": "bytes=-5"}).content == WEIGHTS[-5:]
    assert get_session().get(url, headers={"Range": f"bytes={len(WEIGHTS)}-"}).status_code == 416


def test_protocol_checks(api: HfApi, hub_server: HubServer, pushed: tuple[str, str]) -> None:
    repo_id, _ = pushed
    headers = {"Authorization": f"Bearer {hub_server.token}"}
    content = b"some LFS object"
    oid = hashlib.sha256(content).hexdigest()
    batch = get_session().post(
        f"{hub_server.url}/{repo_id}.git/info/lfs/objects/batch", headers=headers,
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(content)}]},
    ).json()
    upload = batch["objects"][0]["actions"]["upload"]["href"]
    assert get_session().put(upload, content=b"other content!!").status_code == 400  # same size, wrong sha256
    assert get_session().put(upload.replace("sig=", "sig=0"), content=content).status_code == 403
    assert oid not in hub_server.lfs_objects

    # A commit pointing at an LFS object that was never uploaded is refused, as is binary data sent inline.
    missing = CommitOperationAdd("weights.safetensors", b"never uploaded")
    missing._upload_mode, missing._should_ignore, missing._is_uploaded = "lfs", False, True
    with pytest.raises(BadRequestError, match="LFS pointer"):
        api.create_commit(repo_id, [missing], commit_message="bad")
    inline = CommitOperationAdd("blob.dat", b"\x00\x01binary")
    inline._upload_mode, inline._should_ignore = "regular", False
    with pytest.raises(BadRequestError, match="binary"):
        api.create_commit(repo_id, [inline], commit_message="bad")
    assert hub_server.commits(repo_id)[-1].message == "Add adapter"

    # Tree listing: non-recursive shows folders, recursive shows their files.
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="checkpoints/step-1/state.json", repo_id=repo_id)
    top = {e.path for e in api.list_repo_tree(repo_id)}
    assert "checkpoints" in top and "checkpoints/step-1/state.json" not in top
    deep = {e.path for e in api.list_repo_tree(repo_id, path_in_repo="checkpoints", recursive=True)}
    assert deep == {"checkpoints/step-1", "checkpoints/step-1/state.json"}
    info = api.get_paths_info(repo_id, ["adapter_model.safetensors", "checkpoints", "absent"], expand=True)
    assert [i.path for i in info] == ["adapter_model.safetensors", "checkpoints"]
    assert info[0].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest() and info[0].last_commit.title == "Add adapter"


def test_seed_and_reset_on_a_private_instance(tmp_path: Path) -> None:
    with HubServer(tmp_path / "store") as hub:  # port 0: its own free port, not HF_ENDPOINT
        sha = hub.seed("test-org/seeded", {"config.json": "{}", "model.safetensors": b"\x00" * 10})
        assert hub.tree("test-org/seeded")["model.safetensors"]["lfs"] is not None
        api = HfApi(endpoint=hub.url, token=hub.token)
        assert api.model_info("test-org/seeded").sha == sha
        got = hf_hub_download("test-org/seeded", "model.safetensors", cache_dir=tmp_path / "c", endpoint=hub.url)
        assert Path(got).read_bytes() == b"\x00" * 10
        assert (tmp_path / "store" / "repos" / "models" / "test-org" / "seeded" / "repo.json").is_file()
        hub.reset()
        assert not hub.repo_exists("test-org/seeded") and not hub.requests
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("test-org/seeded")
