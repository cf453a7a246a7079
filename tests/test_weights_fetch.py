"""Weight files fetched once on the submitting host, verified, and read offline by the runs
(runners.weights, ``kdbench fetch``, the launch's fetch): served by a real HTTP server on 127.0.0.1
(tests/weights_server.py), never the internet. The student's ImageNet backbone is named the way
mmseg configs name theirs, ``open-mmlab://<name>``, resolved through mmengine's table, to which
``$MMENGINE_HOME/open_mmlab.json`` adds the test's entry (as mmengine itself reads it)."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from kdbench.errors import UserError
from tests.launch_helpers import CWD, TINY_BASE, dump_yaml, outcome, run_cli, wait_until
from tests.run_fixtures import SHORT, TINY_DATA, execute
from tests.weights_server import WeightsServer, checkpoint_bytes, hashed_name

ROOT = Path(__file__).resolve().parents[1]
BACKBONE_REFERENCE = "open-mmlab://kdbench_tiny_r18"


@pytest.fixture(scope="module")
def weight_bytes(tmp_path_factory):
    """A tiny teacher's checkpoint and a tiny student's backbone, as files a model zoo would serve."""
    import torch

    from runners.build import build_model, load_config

    os.environ["KDBENCH_DATA"] = str(tmp_path_factory.getbasetemp() / "data")
    torch.manual_seed(123)
    teacher = build_model(load_config("tiny_seg_teacher"), "seg").state_dict()
    backbone = build_model(load_config("tiny_seg_student"), "seg").backbone.state_dict()
    return {"teacher": checkpoint_bytes(teacher), "backbone": checkpoint_bytes(backbone)}


@pytest.fixture
def zoo(tmp_path, monkeypatch, weight_bytes):
    """The server with both files under hash-carrying names, an empty weights cache, and mmengine's
    table naming the backbone."""
    server = WeightsServer()
    names = {kind: hashed_name(f"tiny_{kind}_20200101", data) for kind, data in weight_bytes.items()}
    for kind, name in names.items():
        server.files[name] = weight_bytes[kind]
    home = tmp_path / "mmengine"
    home.mkdir()
    (home / "open_mmlab.json").write_text(json.dumps({"kdbench_tiny_r18": server.url(names["backbone"])}))
    monkeypatch.setenv("MMENGINE_HOME", str(home))
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KDBENCH_OFFLINE", raising=False)
    yield SimpleNamespace(server=server, names=names, data=weight_bytes, cache=tmp_path / "cache" / "weights",
                          teacher_url=server.url(names["teacher"]), home=home)
    server.stop()


def cached(zoo, name: str, must_exist: bool = True) -> Path:
    """The cache's file of that name (kept under its hash: ``weights/<HASH>/<NAME>``); with
    ``must_exist`` False, where it would be for the zoo's URL of that name."""
    from runners.weights import weight_file

    found = sorted(zoo.cache.glob(f"*/{name}"))
    assert len(found) <= 1, found
    if found or must_exist:
        return found[0] if found else zoo.cache / "absent" / name
    return weight_file(zoo.server.url(name), "test").path


def write_study(directory: Path, teacher: dict, name: str = "zoo") -> Path:
    """A teacher given by its checkpoint, a student baseline and one CWD run; the student's backbone
    is initialised from ImageNet-style weights named as mmseg configs name them."""
    base = {**TINY_BASE, "teacher": {"config": "tiny_seg_teacher", **teacher},
            "student": {"config": "tiny_seg_student", "overrides": {"model.pretrained": BACKBONE_REFERENCE}}}
    spec = {"name": name, "base": base, "methods": {"cwd_logits": CWD}, "seeds": [0],
            "resources": {"gpus": 0, "cpus": 1, "mem_gb": 2, "time_min": 30}}
    path = directory / f"{name}.yaml"
    path.write_text(dump_yaml(spec))
    return path


def test_fetch_downloads_every_weight_file_of_a_study_once_verified_and_plan_shows_them_present(tmp_path, zoo):
    study = write_study(tmp_path, {"checkpoint": zoo.teacher_url})
    results = str(tmp_path / "results")

    code, out, _ = run_cli("plan", str(study), "--results", results, "--no-model-check", "--json")
    assert code == 0
    before = {row["name"]: row["weights"] for row in json.loads(out)}
    assert before == {"teacher": "absent 1 of 1", "student_s0": "absent 1 of 1", "cwd_logits_s0": "absent 2 of 2"}

    code, out, _ = run_cli("fetch", str(study), "--results", results, "--no-progress")
    assert code == 0, out
    for kind, name in zoo.names.items():
        assert cached(zoo, name).read_bytes() == zoo.data[kind]
    assert sorted(name for name, _ in zoo.server.requests) == sorted(zoo.names.values())  # each file once
    assert "2 fetched" in out and not list(zoo.cache.glob("*/*.part"))

    code, out, _ = run_cli("fetch", str(study), "--results", results, "--no-progress")
    assert code == 0 and "2 cached" in out and len(zoo.server.requests) == 2  # nothing downloaded again
    code, out, _ = run_cli("plan", str(study), "--results", results, "--no-model-check", "--json")
    assert code == 0 and {row["weights"] for row in json.loads(out)} == {"cached"}
    code, out, _ = run_cli("plan", str(study), "--results", results, "--no-model-check")
    assert code == 0 and out.splitlines()[0].split()[:5] == ["run_id", "name", "stage", "status", "weights"]


def test_a_connection_dropped_mid_file_is_resumed_from_the_bytes_already_there(tmp_path, zoo):
    name = zoo.names["teacher"]
    half = len(zoo.data["teacher"]) // 2
    zoo.server.cut(name, half)
    study = write_study(tmp_path, {"checkpoint": zoo.teacher_url})
    code, _, err = run_cli("fetch", str(study), "--results", str(tmp_path / "results"), "--no-progress")
    assert code == 0, err
    assert [r for r in zoo.server.requests if r[0] == name] == [(name, None), (name, f"bytes={half}-")]
    assert cached(zoo, name).read_bytes() == zoo.data["teacher"]


def test_a_killed_fetch_leaves_only_a_part_file_and_the_next_fetch_resumes_it(tmp_path, zoo):
    """Guarantee: Weight files are downloaded once, on the submitting host, and verified: a download dropped or killed
    part-way resumes from its bytes and never has its final name until complete; bytes that do not match the
    hash in the name (or the spec's `sha256`) are refused in one line and not kept; an offline run reads its
    teacher and backbone from the cache (the same numbers as from the files) and one whose files are not cached
    fails its preflight without a download; a launch refuses before submitting when a file cannot be fetched; a
    SLURM launch fetches first and its jobs, offline, download nothing."""
    name = zoo.names["teacher"]
    half = len(zoo.data["teacher"]) // 2
    hold = threading.Event()
    zoo.server.cut(name, half, hold)
    study = write_study(tmp_path, {"checkpoint": zoo.teacher_url})
    command = [sys.executable, "-m", "kdbench.cli", "fetch", str(study), "--results", str(tmp_path / "results"),
               "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = cached(zoo, name, must_exist=False).with_name(f"{name}.part")
    try:
        wait_until(lambda: part.is_file() and part.stat().st_size == half, what="half the file on disk")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        hold.set()
        if process.poll() is None:
            process.kill()
    assert not cached(zoo, name).exists()  # a partial file never has the final name

    code, _, err = run_cli("fetch", str(study), "--results", str(tmp_path / "results"), "--no-progress")
    assert code == 0, err
    assert [r for r in zoo.server.requests if r[0] == name] == [(name, None), (name, f"bytes={half}-")]
    assert cached(zoo, name).read_bytes() == zoo.data["teacher"] and not part.exists()


def test_a_file_whose_bytes_do_not_match_the_hash_in_its_name_is_one_line_naming_both_and_is_not_kept(tmp_path, zoo):
    """Guarantee: A file whose bytes do not match the hash in its name is one line naming both and is not kept."""
    wrong = hashed_name("tiny_teacher_20200101", b"other bytes")
    zoo.server.files[wrong] = zoo.data["teacher"]
    study = write_study(tmp_path, {"checkpoint": zoo.server.url(wrong)})
    code, out, err = run_cli("fetch", str(study), "--results", str(tmp_path / "results"), "--no-progress")
    import hashlib

    actual = hashlib.sha256(zoo.data["teacher"]).hexdigest()
    expected = wrong.rsplit("-", 1)[1].split(".")[0]
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and wrong in err and actual in err and expected in err
    assert "base.teacher.checkpoint" in err
    assert not cached(zoo, wrong).exists() and not list(zoo.cache.glob("*/*.part"))


def test_a_sha256_given_in_the_spec_verifies_a_file_whose_name_carries_none(tmp_path, zoo):
    import hashlib

    zoo.server.files["teacher_latest.pth"] = zoo.data["teacher"]
    zoo.server.files["teacher_unpinned.pth"] = zoo.data["teacher"]
    digest = hashlib.sha256(zoo.data["teacher"]).hexdigest()
    url = zoo.server.url("teacher_latest.pth")
    unpinned = write_study(tmp_path, {"checkpoint": zoo.server.url("teacher_unpinned.pth")}, name="unpinned")
    code, out, err = run_cli("fetch", str(unpinned), "--results", str(tmp_path / "results"), "--no-progress")
    assert code == 0 and "unverified" in out and f"its sha256 is {digest}" in err  # said, with what to pin
    wrong = write_study(tmp_path, {"checkpoint": url, "sha256": "0" * 64}, name="wrong")
    code, _, err = run_cli("fetch", str(wrong), "--results", str(tmp_path / "results"), "--no-progress")
    assert code == 2 and digest in err and "0" * 64 in err and not cached(zoo, "teacher_latest.pth").exists()

    right = write_study(tmp_path, {"checkpoint": url, "sha256": digest[:12]}, name="right")
    code, out, err = run_cli("fetch", str(right), "--results", str(tmp_path / "results"), "--no-progress")
    assert code == 0, err
    assert cached(zoo, "teacher_latest.pth").read_bytes() == zoo.data["teacher"] and "unverified" not in out


def test_an_offline_run_reads_its_teacher_and_backbone_from_the_cache_and_matches_a_run_from_the_files(
        tmp_path, zoo, monkeypatch):
    """Guarantee: An offline run reads its teacher and backbone from the cache and matches a run from the files."""
    study = write_study(tmp_path, {"checkpoint": zoo.teacher_url})
    assert run_cli("fetch", str(study), "--results", str(tmp_path / "results"), "--no-progress")[0] == 0
    zoo.server.stop()  # any download now fails: the run can only read the cache
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    files = tmp_path / "files"
    files.mkdir()
    for kind, data in zoo.data.items():
        (files / f"{kind}.pth").write_bytes(data)

    def run(teacher_checkpoint, backbone):
        return {"task": "seg", "dataset": TINY_DATA, "schedule": dict(SHORT), "seed": 0,
                "teacher": {"config": "tiny_seg_teacher", "checkpoint": teacher_checkpoint},
                "student": {"config": "tiny_seg_student", "overrides": {"model.pretrained": backbone}},
                "distill": [{**CWD, "name": "cwd_logits"}]}

    execute(run(zoo.teacher_url, BACKBONE_REFERENCE), tmp_path / "from_cache")
    execute(run(str(files / "teacher.pth"), str(files / "backbone.pth")), tmp_path / "from_files")
    assert outcome(tmp_path / "from_cache") == outcome(tmp_path / "from_files")

    execute(run(str(files / "teacher.pth"), None), tmp_path / "no_backbone")  # the backbone's weights matter
    assert outcome(tmp_path / "no_backbone")["logged"] != outcome(tmp_path / "from_files")["logged"]


def test_an_offline_run_whose_weights_are_not_in_the_cache_fails_its_preflight_without_a_download(
        tmp_path, zoo, monkeypatch):
    """Guarantee: An offline run whose weights are not in the cache fails its preflight without a download."""
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    run = {"task": "seg", "dataset": TINY_DATA, "schedule": dict(SHORT),
           "student": {"config": "tiny_seg_student", "overrides": {"model.pretrained": BACKBONE_REFERENCE}}}
    with pytest.raises(UserError, match="is not in the weights cache .*kdbench fetch") as error:
        execute(run, tmp_path / "run")
    assert zoo.names["backbone"] in str(error.value) and "student.config" in str(error.value)
    assert zoo.server.requests == [] and not (tmp_path / "run").exists()


def test_a_launch_refuses_before_submitting_anything_when_a_weight_file_cannot_be_fetched(tmp_path, zoo):
    """Guarantee: A launch refuses before submitting anything when a weight file cannot be fetched."""
    study = write_study(tmp_path, {"checkpoint": zoo.server.url(hashed_name("gone_20200101", b"gone"))})
    results = tmp_path / "results"
    code, _, err = run_cli("launch", str(study), "--results", str(results), "--no-progress", "--no-model-check")
    assert code == 2 and "cannot download" in err and "HTTP Error 404" in err
    assert len(err.strip().splitlines()) == 1
    assert not list(results.glob("zoo/*/run.json")) and not list(results.glob("zoo/*/job.json"))


def test_a_slurm_launch_without_fetch_refuses_a_run_whose_weights_are_not_in_the_cache(tmp_path, zoo):
    from kdbench.stages import load_study
    from runners.launch.launcher import LaunchOptions, decide, executor_for, prepare_weights

    study = load_study(write_study(tmp_path, {"checkpoint": zoo.teacher_url}), tmp_path / "results")
    decisions = decide(study, retry_failed=False)
    offline = executor_for(study, LaunchOptions(executor="slurm"))
    with pytest.raises(UserError, match="is not in the weights cache"):
        prepare_weights(study, decisions, LaunchOptions(executor="slurm", fetch=False), offline)
    assert zoo.server.requests == []
    prepare_weights(study, decisions, LaunchOptions(executor="slurm", progress=False), offline)  # fetches, passes
    assert sorted(p.name for p in zoo.cache.glob("*/*") if not p.name.startswith(".")) == sorted(zoo.names.values())


def test_slurm_jobs_read_the_submitting_hosts_weights_cache_and_may_not_download(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from kdbench.study import Resources
    from runners.launch.slurm import SlurmExecutor

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "a cache"))
    slurm = SlurmExecutor(Resources(gpus=0, cpus=1, mem_gb=2, time_min=30), "zoo").executor_for(
        tmp_path, "student", [])._executor
    lines = _make_sbatch_string(command="python -u -m submitit.core._submit FOLDER", folder=slurm.folder,
                                **slurm.parameters).splitlines()
    assert f"export KDBENCH_CACHE='{tmp_path / 'a cache'}' KDBENCH_OFFLINE=1" in lines


def test_a_teacher_sha256_must_be_hex_and_belongs_to_a_url_checkpoint():
    from kdbench.spec import parse_run

    base = {"task": "seg", "role": "teacher", "dataset": TINY_DATA, "schedule": {"iterations": 0}}
    url = "https://example.org/t.pth"
    parsed = parse_run({**base, "teacher": {"config": "tiny_seg_teacher", "checkpoint": url, "sha256": "ABCDEF12"}})
    assert parsed.teacher.sha256 == "abcdef12" and parsed.to_dict()["teacher"]["sha256"] == "abcdef12"
    assert "sha256" not in parse_run({**base, "teacher": {"config": "tiny_seg_teacher", "checkpoint": url}}
                                     ).to_dict()["teacher"]  # absent: the run's id is what it was
    with pytest.raises(UserError, match="teacher.sha256: must be a SHA-256 in hex"):
        parse_run({**base, "teacher": {"config": "tiny_seg_teacher", "checkpoint": url, "sha256": "xyz"}})
    with pytest.raises(UserError, match="teacher.sha256: .*URL checkpoint"):
        parse_run({**base, "teacher": {"config": "tiny_seg_teacher", "checkpoint": "t.pth", "sha256": "abcdef12"}})



def test_two_pins_of_one_name_are_two_files_and_one_pin_fetched_from_two_urls_is_one(tmp_path, zoo):
    """Guarantee: The weights cache is content-addressed: two pins of one name are two files, and one pin fetched
    from two URLs is one.

    The cache is content-addressed: a file is kept under the hash it is pinned to, so two
    studies pinning different hashes for one name never share a file (an HTML page another study
    cached under that name is never taken for a checkpoint)."""
    import hashlib

    from runners.weights import fetch, weight_file

    page = b"<html>a login page</html>"
    zoo.server.files["teacher_latest.pth"] = zoo.data["teacher"]
    mirror = WeightsServer()   # another site serving other bytes under the same name
    mirror.files["teacher_latest.pth"] = page
    try:
        digest, other = hashlib.sha256(zoo.data["teacher"]).hexdigest(), hashlib.sha256(page).hexdigest()
        first = weight_file(mirror.url("teacher_latest.pth"), "a.yaml: base.teacher.checkpoint", other)
        second = weight_file(zoo.server.url("teacher_latest.pth"), "b.yaml: base.teacher.checkpoint", digest)
        assert first.name == second.name and first.path != second.path
        assert [how for _, how in fetch([first, second], progress=False)] == ["fetched", "fetched"]
        assert first.path.read_bytes() == page and second.path.read_bytes() == zoo.data["teacher"]
        same = weight_file(mirror.url("teacher_latest.pth"), "c.yaml: base.teacher.checkpoint", digest)  # same pin
        assert same.path == second.path and fetch([same], progress=False)[0][1] == "cached"
    finally:
        mirror.stop()


def test_a_cached_file_that_fails_its_pin_is_fetched_again_online_and_refused_in_one_line_offline(
        tmp_path, zoo, monkeypatch):
    """Guarantee: A cached weight file that fails its pin is fetched again online and refused in one line offline."""
    from runners.weights import fetch, local_file, weight_file

    file = weight_file(zoo.teacher_url, "zoo.yaml: base.teacher.checkpoint")
    fetch([file], progress=False)
    file.path.write_bytes(b"<html>another account's page</html>")   # a shared cache, written by someone else
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    with pytest.raises(UserError, match=r"zoo\.yaml: base\.teacher\.checkpoint: .*does not match the pinned") as error:
        local_file(file)
    assert len(str(error.value).splitlines()) == 1
    monkeypatch.delenv("KDBENCH_OFFLINE")
    assert local_file(file).read_bytes() == zoo.data["teacher"]   # fetched again, verified
    assert [r[0] for r in zoo.server.requests].count(zoo.names["teacher"]) == 2


def test_a_fetch_never_writes_through_a_part_file_planted_as_a_link(tmp_path, zoo):
    """Guarantee: A weight fetch never writes through a `.part` file planted as a link."""
    from runners.weights import fetch, weight_file

    file = weight_file(zoo.teacher_url, "zoo.yaml: base.teacher.checkpoint")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    file.path.parent.mkdir(parents=True)
    file.path.with_name(f"{file.name}.part").symlink_to(victim)
    assert fetch([file], progress=False)[0][1] == "fetched"
    assert victim.read_text() == "precious" and file.path.read_bytes() == zoo.data["teacher"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_slurm_launch_fetches_on_the_submitting_host_and_its_jobs_read_the_cache_offline(
        slurm_cluster, tmp_path, zoo, monkeypatch):
    """Guarantee: A slurm launch fetches on the submitting host and its jobs read the cache offline."""
    from kdbench.stages import load_study
    from runners.launch.jobs import status
    from runners.launch.launcher import LaunchOptions, launch, summary
    from tests.launch_helpers import settled

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    study = load_study(write_study(tmp_path, {"checkpoint": zoo.teacher_url}), tmp_path / "results")
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False))) == {"submit": 3}
    fetched = list(zoo.server.requests)  # before anything was submitted: each file once
    assert sorted(name for name, _ in fetched) == sorted(zoo.names.values())
    wait_until(lambda: settled(study), what="the study to finish on SLURM")
    assert {r.name: r.state for r in status(study)} == {
        "teacher": "complete", "student_s0": "complete", "cwd_logits_s0": "complete"}
    assert zoo.server.requests == fetched  # the jobs, offline, read the cache and downloaded nothing


def test_an_mmcls_backbone_is_read_from_the_cache_as_mmengine_reads_it_the_backbone_tensors_unprefixed(
        tmp_path, monkeypatch):
    """mmseg's MobileNetV2 configs name ``mmcls://mobilenet_v2``: a classifier checkpoint whose
    ``backbone.`` tensors mmengine keeps, unprefixed. Read from the cache, the model gets the same."""
    import torch

    from runners.build import build_model, load_config, register_scope
    from runners.weights import localize, weight_file

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    cfg = load_config("mmseg::mobilenet_v2/mobilenet-v2-d8_pspnet_4xb2-80k_cityscapes-512x1024.py")
    assert cfg.model.pretrained == "mmcls://mobilenet_v2"
    register_scope("seg")
    from mmseg.registry import MODELS

    torch.manual_seed(7)
    backbone = MODELS.build({**cfg.model.backbone.to_dict(), "norm_cfg": {"type": "BN", "requires_grad": True}})
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(1000, 1280)  # the classifier's own head: not the backbone's
    from runners import weights

    path = weight_file("mmcls://mobilenet_v2", "test").path
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, path)
    # A file made here cannot carry the published bytes its name's hash pins: this test is about how
    # the tensors are read (the pin checks have tests of their own above).
    monkeypatch.setattr(weights, "pin_failure", lambda file: None)

    localize(cfg.model, "student.config")
    model = build_model(cfg, "seg")
    built, expected = model.backbone.state_dict(), backbone.state_dict()
    assert built.keys() == expected.keys() and all(torch.equal(built[k], expected[k]) for k in expected)
