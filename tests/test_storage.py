"""Publishing a finished build to object storage (medvl.io.storage): a real S3-compatible server on 127.0.0.1
(moto's ThreadedMotoServer), read back with s3fs and with pyarrow's own S3 filesystem; memory:// and file://;
resume after an interrupted upload (an exception, and kill -9 of a subprocess); credentials kept out of errors.

Nothing here reaches the internet: dummy AWS credentials, the endpoint is the local server, instance metadata
lookups are disabled and proxies bypassed for 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import fsspec
import pytest

from medvl.demo import corpus as demo
from medvl.io.storage import (
    PublishError,
    is_url,
    parse_storage_options,
    publish,
    safe_options,
    staging_dir,
)
from medvl.pipeline.build import run_build
from medvl.pipeline.recipe import parse_recipe

KEY_ID = "AKIAMEDVLTESTDUMMY0001"
SECRET = "medvl-dummy-secret-not-a-real-one-0001"
PARQUET = "parquet/train-00000-of-00001.parquet"


def _recipe(corpus: Path, seed: int) -> dict:
    r = demo.demo_recipe()
    r["sources"] = [s for s in r["sources"] if s["path"].startswith(("corpus/ihc", "corpus/retina"))]
    for s in r["sources"]:
        s["path"] = str(corpus / Path(s["path"]).relative_to("corpus"))
    r["seed"] = seed
    return r


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("storage") / "corpus"
    root.mkdir()
    demo.write_ihc(root, tile=128, stride=128)  # scikit-image IHC tiles, two classes, and COCO boxes
    demo.write_retina(root, tile=352, stride=352)  # scikit-image retina with vessel masks
    return root


@pytest.fixture(scope="module")
def build(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build_a")
    run_build(parse_recipe(_recipe(corpus, seed=0)), out)
    return out


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_bytes(fs, root: str, local: dict[str, bytes]) -> bool:
    """Every local file is at ``root`` with the same bytes (read afresh: no listing cache)."""
    fs.invalidate_cache()
    return {k: _sha(fs.cat_file(f"{root}/{k}")) for k in local} == {k: _sha(v) for k, v in local.items()}


# ---------------------------------------------------------------- S3 server (moto) ----------------------------------

@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and the options to reach it; skipped only when moto is not installed."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] not installed: pip install -c "
                                                            "constraints.txt 'moto[server]' to run the S3 tests")
    pytest.importorskip("s3fs", reason="s3fs not installed (pip install -c constraints.txt s3fs)")
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield {"endpoint": endpoint, "port": port,
               "options": {"endpoint_url": endpoint, "key": KEY_ID, "secret": SECRET}}
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture
def bucket(s3) -> str:
    import s3fs

    name = f"medvl-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(**s3["options"]).mkdir(name)
    return name


def _s3fs(s3):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **s3["options"])


def _arrow_s3(s3):
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(access_key=KEY_ID, secret_key=SECRET, endpoint_override=f"127.0.0.1:{s3['port']}",
                             scheme="http", region="us-east-1")


def _remote_files(fs, root: str) -> dict[str, int]:
    fs.invalidate_cache()
    return {p[len(root) + 1:]: int(i["size"]) for p, i in fs.find(root, detail=True).items() if i["type"] == "file"}


def test_s3_publish_reads_back_with_s3fs_and_pyarrow(build, s3, bucket):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    local = _local_files(build)
    manifest = json.loads(local["manifest.json"])
    calls = []
    rep = publish(build, f"s3://{bucket}/builds/a", storage_options=s3["options"], workers=4,
                  progress=lambda d, t: calls.append((d, t)))
    assert (rep.files, rep.uploaded, rep.skipped) == (len(local), len(local), 0)
    assert rep.bytes_uploaded == sum(len(b) for b in local.values())
    assert calls[-1] == (len(local), len(local)) and [d for d, _ in calls] == sorted(d for d, _ in calls)

    fs = _s3fs(s3)
    root = f"{bucket}/builds/a"
    assert _remote_files(fs, root) == {k: len(v) for k, v in local.items()}  # no receipts left behind
    listed = [f for f in manifest["files"] if "sha256" in f]
    assert len(listed) >= 15 and PARQUET in {f["path"] for f in listed}
    arrow = _arrow_s3(s3)
    for f in listed:
        assert _sha(fs.cat_file(f"{root}/{f['path']}")) == f["sha256"], f["path"]
        with arrow.open_input_stream(f"{root}/{f['path']}") as stream:
            assert _sha(stream.read()) == f["sha256"], f["path"]
    for rel in (r for r in local if r.startswith(("images/", "masks/"))):  # content-addressed: name = sha256
        assert _sha(fs.cat_file(f"{root}/{rel}")) == Path(rel).stem

    url = f"s3://{root}/{PARQUET}"
    want = pq.read_table(build / PARQUET)
    assert pq.read_table(url, filesystem=fs).equals(want)  # s3fs handles the s3:// URL
    assert pq.read_table(f"{root}/{PARQUET}", filesystem=arrow).equals(want)  # pyarrow's own S3 client
    opts = f"endpoint_override=127.0.0.1:{s3['port']}&scheme=http&region=us-east-1"
    assert pq.read_table(f"{url}?{opts}").equals(want)  # a plain URI, resolved by pyarrow alone
    assert ds.dataset(f"{root}/parquet", filesystem=arrow, format="parquet").count_rows() == want.num_rows

    again = publish(build, f"s3://{root}", storage_options=s3["options"])
    assert (again.uploaded, again.skipped, again.bytes_uploaded) == (0, len(local), 0)


def test_s3_republish_sends_only_missing_or_wrong_objects(build, s3, bucket):
    root = f"{bucket}/b"
    publish(build, f"s3://{root}", storage_options=s3["options"])
    fs = _s3fs(s3)
    local = _local_files(build)
    image = next(r for r in local if r.startswith("images/"))
    for rel in (image, "samples.jsonl", PARQUET):
        fs.rm_file(f"{root}/{rel}")
    fs.pipe_file(f"{root}/records.jsonl", local["records.jsonl"][:100])  # a truncated object
    rep = publish(build, f"s3://{root}", storage_options=s3["options"], workers=3)
    assert (rep.uploaded, rep.skipped) == (4, len(local) - 4)
    assert rep.bytes_uploaded == sum(len(local[r]) for r in (image, "samples.jsonl", PARQUET, "records.jsonl"))
    assert _same_bytes(fs, root, local)


class _Stop(Exception):
    pass


def test_s3_interrupted_publish_resumes_without_resending(build, s3, bucket):
    root = f"{bucket}/c"
    local = _local_files(build)

    def stop_after(done: int, total: int) -> None:
        if done >= 30:
            raise _Stop()

    with pytest.raises(_Stop):
        publish(build, f"s3://{root}", storage_options=s3["options"], workers=2, progress=stop_after)
    fs = _s3fs(s3)
    present = {k: v for k, v in _remote_files(fs, root).items() if not k.startswith(".medvl-publish/")}
    assert "manifest.json" not in present  # a reader never sees a manifest before its files
    assert 30 <= len(present) < len(local)
    assert any(not k.startswith(("images/", "masks/")) for k in present)  # resumed via receipts, not names
    rep = publish(build, f"s3://{root}", storage_options=s3["options"], workers=2)
    assert (rep.uploaded, rep.skipped) == (len(local) - len(present), len(present))
    assert _same_bytes(fs, root, local)
    assert not fs.exists(f"{root}/.medvl-publish")


def test_s3_kill_9_during_publish_then_resume(build, s3, bucket, tmp_path):
    """A real kill: the publishing process SIGKILLs itself after 40 files; a re-run finishes the job and
    re-sends none of the content-addressed images that made it."""
    root = f"{bucket}/k"
    script = tmp_path / "pub.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from medvl.io.storage import publish
        def kill(done, total):
            if done >= 40:
                os.kill(os.getpid(), signal.SIGKILL)
        publish(Path({str(build)!r}), "s3://{root}", storage_options={s3['options']!r}, workers=4, progress=kill)
        """))
    proc = subprocess.run([sys.executable, str(script)], env=dict(os.environ), capture_output=True, timeout=120,
                          check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    fs = _s3fs(s3)
    present = {k for k in _remote_files(fs, root) if not k.startswith(".medvl-publish/")}
    local = _local_files(build)
    assert "manifest.json" not in present and 0 < len(present) < len(local)
    named = {k for k in present if k.startswith(("images/", "masks/"))}
    rep = publish(build, f"s3://{root}", storage_options=s3["options"])
    assert rep.skipped >= len(named) and rep.uploaded <= len(local) - len(named)
    assert rep.uploaded + rep.skipped == len(local)
    assert _same_bytes(fs, root, local)


def test_s3_deep_check_catches_a_same_size_change(build, s3, bucket):
    root = f"{bucket}/d"
    publish(build, f"s3://{root}", storage_options=s3["options"])
    fs = _s3fs(s3)
    good = (build / "samples.jsonl").read_bytes()
    fs.pipe_file(f"{root}/samples.jsonl", good.replace(b"a", b"b"))  # same size, other bytes
    trusting = publish(build, f"s3://{root}", storage_options=s3["options"])
    assert trusting.uploaded == 0  # the default trusts the recorded checksum when sizes match
    deep = publish(build, f"s3://{root}", storage_options=s3["options"], deep=True)
    assert deep.uploaded == 1 and fs.cat_file(f"{root}/samples.jsonl") == good


def test_s3_new_build_hides_old_manifest_and_sends_only_changes(build, corpus, s3, bucket, tmp_path):
    root = f"{bucket}/e"
    publish(build, f"s3://{root}", storage_options=s3["options"])
    other = tmp_path / "build_b"
    run_build(parse_recipe(_recipe(corpus, seed=1)), other)
    old, new = _local_files(build), _local_files(other)
    changed = {k for k, v in new.items() if old.get(k) != v}
    assert "manifest.json" in changed and "samples.jsonl" in changed
    assert any(k.startswith("images/") for k in new) and not any(k.startswith("images/") for k in changed)
    fs = _s3fs(s3)
    seen = []

    def watch(done: int, total: int) -> None:
        if not seen:
            fs.invalidate_cache()
            seen.append(fs.exists(f"{root}/manifest.json"))

    rep = publish(other, f"s3://{root}", storage_options=s3["options"], progress=watch)
    assert seen == [False]  # the old manifest was gone before the first file changed
    assert rep.uploaded == len(changed) and rep.skipped == len(new) - len(changed)
    assert _same_bytes(fs, root, new)


def test_s3_errors_name_file_and_remote_path_without_credentials(build, s3):
    with pytest.raises(PublishError) as exc:
        publish(build, "s3://medvl-no-such-bucket/x", storage_options=s3["options"], workers=2, max_errors=5)
    msg = str(exc.value)
    assert "records.jsonl -> s3://medvl-no-such-bucket/x/records.jsonl" in msg or \
        "-> s3://medvl-no-such-bucket/x/" in msg
    assert "manifest.json not uploaded" in msg
    assert KEY_ID not in msg and SECRET not in msg
    assert exc.value.report.uploaded == 0 and 5 <= len(exc.value.report.errors) < 20
    shown = safe_options(s3["options"])
    assert shown["key"] == shown["secret"] == "***" and shown["endpoint_url"] == s3["endpoint"]


def test_s3_publish_through_a_pyarrow_filesystem(build, s3, bucket):
    root = f"{bucket}/f"
    rep = publish(build, f"s3://{root}", filesystem=_arrow_s3(s3), workers=3)
    local = _local_files(build)
    assert rep.uploaded == len(local)
    fs = _s3fs(s3)
    # pyarrow's S3 client keeps a zero-byte "f/" directory marker when it deletes the receipts; nothing else
    assert _remote_files(fs, root) == {**{k: len(v) for k, v in local.items()}, "": 0}
    assert _same_bytes(fs, root, local)


def test_s3_pyarrow_used_when_fsspec_has_no_implementation(build, s3, bucket, tmp_path):
    """In a process where s3fs cannot be imported, an s3:// URL is served by pyarrow's S3 filesystem."""
    root = f"{bucket}/g"
    url = f"s3://{root}?endpoint_override=127.0.0.1:{s3['port']}&scheme=http&region=us-east-1"
    script = tmp_path / "pub.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.modules["s3fs"] = None  # as if s3fs were not installed
        from pathlib import Path
        from medvl.io.storage import publish
        print(json.dumps(publish(Path({str(build)!r}), {url!r}).to_dict()))
        """))
    proc = subprocess.run([sys.executable, str(script)], env=dict(os.environ), capture_output=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rep = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    local = _local_files(build)
    assert rep["uploaded"] == len(local)
    assert _same_bytes(_s3fs(s3), root, local)


# ---------------------------------------------------------------- memory:// and file:// --------------------------------

@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_publish_memory_and_file_urls(build, tmp_path, scheme):
    work = tmp_path / "staged"
    shutil.copytree(build, work)
    (work / ".medvl-work").mkdir()
    (work / ".medvl-work" / "journal.jsonl").write_text("{}\n")
    some_dir = next(p for p in (work / "images").iterdir() if p.is_dir())
    (some_dir / f".{'0' * 64}.123.tmp").write_bytes(b"half-written")
    (work / "llava" / "train.json.tmp").write_text("[")
    png = (build / "card" / "samples_by_kind.png").read_bytes()  # a file two hash levels deep, as in images/ab/cd/
    nested = work / "images" / _sha(png)[:2] / _sha(png)[2:4] / f"{_sha(png)}.png"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(png)
    url = f"memory://medvl-{uuid.uuid4().hex[:8]}/out" if scheme == "memory" else (tmp_path / "remote").as_uri()
    rep = publish(work, url, workers=3)
    local = {**_local_files(build), nested.relative_to(work).as_posix(): png}
    fs, root = fsspec.core.url_to_fs(url)
    assert rep.uploaded == len(local)
    got = {p[len(root.rstrip("/")) + 1:]: fs.cat_file(p) for p in fs.find(root)}
    assert got == local  # byte for byte, and hidden work files / *.tmp were not published
    again = publish(work, url)
    assert (again.uploaded, again.skipped) == (0, len(local))


def test_unfinished_or_changed_build_is_refused(build, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PublishError, match="no manifest.json"):
        publish(empty, "memory://medvl-refused/a")
    gone = tmp_path / "gone"
    shutil.copytree(build, gone)
    (gone / "samples.jsonl").unlink()
    with pytest.raises(PublishError, match="missing: samples.jsonl"):
        publish(gone, "memory://medvl-refused/b")
    changed = tmp_path / "changed"
    shutil.copytree(build, changed)
    with open(changed / "rejects.jsonl", "a") as f:
        f.write('{"late": true}\n')
    url = "memory://medvl-refused/c"
    with pytest.raises(PublishError) as exc:
        publish(changed, url)
    assert "rejects.jsonl -> memory:///medvl-refused/c/rejects.jsonl" in str(exc.value)
    assert "changed after its manifest" in str(exc.value)
    assert not fsspec.filesystem("memory").exists("/medvl-refused/c/manifest.json")


def test_credentials_never_in_messages(build):
    opts = {"key": KEY_ID, "secret": SECRET, "client_kwargs": {"aws_session_token": "medvl-session-token-0001"},
            "endpoint_url": "http://127.0.0.1:9"}
    with pytest.raises(PublishError) as exc:
        publish(build, "nosuchproto://bucket/p", storage_options=opts)
    msg = str(exc.value)
    assert "nosuchproto" in msg and "***" in msg and "http://127.0.0.1:9" in msg
    assert KEY_ID not in msg and SECRET not in msg and "medvl-session-token-0001" not in msg
    # a backend error that echoes a credential (or a URL with user:password) is masked too
    from medvl.io.storage import _secrets, redact

    text = redact(f"denied for {KEY_ID} with {SECRET} at https://bob:hunter22pw@host/x", _secrets(opts, ""))
    assert KEY_ID not in text and SECRET not in text and "hunter22pw" not in text and "https://host/x" in text


def test_is_url_and_staging_dir(tmp_path, monkeypatch):
    for u in ("s3://b/p", "gs://b", "memory://x", "file:///tmp/x", "simplecache::s3://b/p", "abfs://c/p"):
        assert is_url(u), u
    for p in ("out", "/data/out", "./s3:/x", "C:\\data", Path("s3://b")):
        assert not is_url(p), p
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    a = staging_dir("s3://bucket/prefix")
    assert a.parent == tmp_path / "cache" / "staging" and len(a.name) == 16
    assert staging_dir("s3://bucket/prefix/") == a != staging_dir("s3://bucket/other")
    assert staging_dir("s3://bucket/prefix", tmp_path / "st") == tmp_path / "st" / a.name
    assert staging_dir("https://user:pw@host/p") == staging_dir("https://host/p")
    monkeypatch.delenv("MEDVL_CACHE")
    assert staging_dir("s3://bucket/prefix") == Path.home() / ".cache" / "medvl" / "staging" / a.name


def test_parse_storage_options():
    got = parse_storage_options(["endpoint_url=http://127.0.0.1:9000", "anon=false", "client_kwargs.region_name=eu-west-1",
                                 "default_block_size=8388608", "profile=my-profile", "token=a=b"])
    assert got == {"endpoint_url": "http://127.0.0.1:9000", "anon": False, "client_kwargs": {"region_name": "eu-west-1"},
                   "default_block_size": 8388608, "profile": "my-profile", "token": "a=b"}
    for bad in ("noequals", "=v", "a..b=1"):
        with pytest.raises(ValueError, match="storage option"):
            parse_storage_options([bad])
    with pytest.raises(ValueError, match="already set"):
        parse_storage_options(["a=1", "a.b=2"])


# ---------------------------------------------------------------- `medvl build -o URL` ----------------------------------

def _cli_build(recipe: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from medvl.cli.main import main; main()", "build", str(recipe), "-o", url, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_cli_builds_to_s3_and_resumes_a_failed_publish(corpus, build, s3, bucket, tmp_path):
    """`medvl build RECIPE -o s3://...`: the build runs in --staging and is published; a publish that failed
    (wrong endpoint) is finished by `--resume` without building again; the objects equal a local build's."""
    import yaml

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(corpus, seed=0)), encoding="utf-8")
    staging = tmp_path / "staging"
    url = f"s3://{bucket}/cli/v1"
    dead = _cli_build(recipe, url, "--staging", str(staging), "--storage-option", "endpoint_url=http://127.0.0.1:9",
                      "--storage-option", f"secret={SECRET}")
    assert dead.returncode != 0 and "--resume" in dead.stderr, dead.stderr[-2000:]
    assert SECRET not in dead.stdout + dead.stderr
    assert (staging / "manifest.json").is_file()  # the build itself finished

    ok = _cli_build(recipe, url, "--staging", str(staging), "--resume",
                    "--storage-option", f"endpoint_url={s3['endpoint']}")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "is finished; publishing it" in " ".join((ok.stdout + ok.stderr).split())  # rich wraps lines
    fs = _s3fs(s3)
    local = _local_files(staging)
    assert _remote_files(fs, f"{bucket}/cli/v1") == {k: len(v) for k, v in local.items()}
    assert _same_bytes(fs, f"{bucket}/cli/v1", local)
    # the data itself is the in-process build's (recipe.yaml, the manifest and the card name the recipe's folder)
    assert {k: v for k, v in local.items() if k.endswith(".jsonl") or k.startswith(("images/", "parquet/"))} == \
        {k: v for k, v in _local_files(build).items() if k.endswith(".jsonl") or k.startswith(("images/", "parquet/"))}

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(_recipe(corpus, seed=1)), encoding="utf-8")
    refused = _cli_build(other, url, "--staging", str(staging), "--resume",
                         "--storage-option", f"endpoint_url={s3['endpoint']}")
    assert refused.returncode != 0 and "different recipe" in refused.stderr


def test_cli_staging_options_need_a_url(corpus, tmp_path):
    import yaml

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(corpus, seed=0)), encoding="utf-8")
    p = _cli_build(recipe, str(tmp_path / "out"), "--storage-option", "anon=true")
    assert p.returncode == 2 and "only when -o/--out is a URL" in p.stderr
