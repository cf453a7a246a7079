"""The weight files a run downloads, fetched once into one cache and verified.

A run may need a teacher checkpoint given as a URL, and the ImageNet weights its model configs
initialise a backbone from (``open-mmlab://resnet18_v1c``, ``torchvision://resnet50``,
``mmcls://mobilenet_v2`` or a URL; the names resolve through mmengine's tables, as mmengine does).
``kdbench fetch`` and a launch download them on the submitting host into ``$KDBENCH_CACHE/weights``
(default ``~/.cache/kdbench/weights``), stored by content:

- content-addressed: a file is kept as ``weights/<HASH>/<NAME>``, ``HASH`` being the SHA-256 (or the
  prefix of it) it is pinned to: the ``sha256`` the spec gives for a teacher checkpoint, else the
  prefix its name carries (``resnet18_v1c-b5776b93.pth``, the convention of OpenMMLab and
  torchvision). Two studies that pin different hashes for one name never share a file. A file
  nothing pins is kept as ``weights/url-<hash of its URL>/<NAME>``, and said to be unverified;
- checked on every use: a run, a fetch and a launch hash the cached file against its pin before
  using it; a file that fails it (another account's cache, a damaged disk) is fetched again, or,
  where runs may not download, refused in one line;
- resumable: the bytes go to ``NAME.part`` beside it, created exclusively and never written through
  a link, and a later fetch asks the server for the rest (HTTP ``Range``), so an interrupted
  download continues where it stopped;
- atomic: the file gets its own name only once complete and verified, so a partial file never
  looks complete.

A run reads these files from the cache (runners.train): a URL never reaches torch.hub or mmengine.
With ``KDBENCH_OFFLINE=1`` (set in every SLURM job) a file that is not there is a one-line error
before anything runs; without it, a run started by hand fetches what it lacks, verified the same way.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import stat
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from kdbench.errors import UserError
from kdbench.safeio import open_no_follow
from kdbench.spec import RunSpec
from runners.model_facts import cache_root, pretrained_references, reference_slots

# torch.hub's and OpenMMLab's naming: ``<name>-<first 8 or more hex digits of the SHA-256>.<ext>``.
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
# mmengine's URL schemes (mmengine.runner.checkpoint) and the table of its hub/ each reads.
HUBS = {"open-mmlab://": "openmmlab.json", "openmmlab://": "openmmlab.json",
        "torchvision://": "torchvision_0.12.json", "modelzoo://": "torchvision_0.12.json",
        "mmcls://": "mmcls.json"}
CHUNK = 1 << 20
ATTEMPTS = 3                       # a dropped connection is resumed this many times in one fetch


@dataclass(frozen=True)
class WeightFile:
    """One file to download: where from, what it must hash to, and which spec key names it."""

    reference: str                 # as the spec or the config names it
    url: str
    sha256: str | None             # the expected digest or its prefix; None: nothing to check it against
    where: str                     # e.g. "study.yaml: base.teacher.checkpoint"

    @property
    def name(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name

    @property
    def path(self) -> Path:
        """Where the cache keeps it: under its pin, else under its URL (content-addressed)."""
        key = self.sha256 or "url-" + hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return cache_dir() / key / self.name


def cache_dir() -> Path:
    return cache_root() / "weights"


def offline() -> bool:
    """Runs must not download (a compute node): set by the SLURM jobs, or by hand."""
    return os.environ.get("KDBENCH_OFFLINE", "") not in ("", "0")


# -- what a run needs ---------------------------------------------------------------------------
def _mmengine_table(file: str) -> dict:
    spec = importlib.util.find_spec("mmengine")
    if spec is None or spec.origin is None:
        raise UserError("mmengine is not installed (run make setup)")
    return json.loads((Path(spec.origin).parent / "hub" / file).read_text())


def _mmengine_home() -> Path:
    """mmengine's home (``$MMENGINE_HOME``, else ``$XDG_CACHE_HOME/mmengine``): its ``open_mmlab.json``
    adds to and overrides the ``open-mmlab://`` table, as in mmengine."""
    home = os.environ.get("MMENGINE_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "mmengine"
    return Path(home).expanduser()


def _hub_url(reference: str, prefix: str, where: str) -> str | None:
    """The URL of ``prefix + name`` in mmengine's tables; None when it names a file on disk."""
    name = reference[len(prefix):]
    table = _mmengine_table(HUBS[prefix])
    if HUBS[prefix] == "openmmlab.json":
        extra = _mmengine_home() / "open_mmlab.json"
        if extra.is_file():
            table.update(json.loads(extra.read_text()))
        name = _mmengine_table("deprecated.json").get(name, name)
    url = table.get(name)
    if url is None and HUBS[prefix].startswith("torchvision"):
        url = _torchvision_url(name)
    if url is None:
        newer = HUBS[prefix].startswith("torchvision") and importlib.util.find_spec("torchvision") is None
        hint = "; torchvision's newer names need torchvision installed" if newer else ""
        raise UserError(f"{where}: {reference!r}: mmengine knows no weights of that name "
                        f"(e.g. {', '.join(sorted(table)[:4])}){hint}")
    return url if url.startswith(("http://", "https://")) else None


def _torchvision_url(name: str) -> str | None:
    """A torchvision weight enum's URL (``resnet50.imagenet1k_v2``), as mmengine names them."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    from mmengine.runner.checkpoint import get_torchvision_models

    return get_torchvision_models().get(name)


def weight_file(reference: str, where: str, sha256: str | None = None) -> WeightFile | None:
    """The download a reference stands for; None for a file on disk (nothing to fetch)."""
    url = reference if reference.startswith(("http://", "https://")) else None
    for prefix in HUBS:
        if reference.startswith(prefix):
            url = _hub_url(reference, prefix, where)
    if url is None:
        return None
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise UserError(f"{where}: {reference!r}: the URL names no file")
    match = HASH_IN_NAME.search(name)
    return WeightFile(reference, url, sha256 or (match.group(1) if match else None), where)


def run_weights(run: RunSpec, key=lambda path: path) -> list[WeightFile]:
    """The files ``run`` downloads: its teacher checkpoint when given as a URL, and the pretrained
    weights of the models it initialises (``key``: a field path -> how an error names it)."""
    files = []
    teacher = run.teacher
    uses_teacher = teacher is not None and (run.role == "teacher" or bool(run.distill))
    if uses_teacher and isinstance(teacher.checkpoint, str):
        files.append(weight_file(teacher.checkpoint, key("teacher.checkpoint"), teacher.sha256))
    # Initialised models only: a teacher with a checkpoint is built without its ImageNet init.
    models = [("student", run.student)] if run.role == "student" else []
    if uses_teacher and teacher.checkpoint is None:
        models.append(("teacher", teacher))
    for role, model in models:
        for reference in pretrained_references(run.task, model.config, model.overrides):
            files.append(weight_file(reference, f"{key(role + '.config')} ({model.config})"))
    return [f for f in files if f is not None]


def missing(files: list[WeightFile]) -> list[WeightFile]:
    return [f for f in files if not f.path.is_file()]


def presence(files: list[WeightFile]) -> str:
    """How ``kdbench plan`` shows a run's weight files: ``none`` to download, all ``cached``, or
    ``absent 1 of 2`` (a word apart from the run states, where ``missing`` means no run directory)."""
    absent = len(missing(files))
    return "none" if not files else "cached" if not absent else f"absent {absent} of {len(files)}"


def require_cached(files: list[WeightFile]) -> None:
    """Where runs may not download: the first file not in the cache, or whose bytes fail its pin,
    is a one-line error."""
    absent = missing(files)
    if absent:
        raise UserError(f"{absent[0].where}: {absent[0].name} is not in the weights cache {cache_dir()} and runs "
                        f"there may not download (KDBENCH_OFFLINE); run kdbench fetch on a host with internet")
    for file in files:
        got = pin_failure(file)
        if got:
            raise UserError(f"{file.where}: {file.path}: sha256 {got} does not match the pinned {file.sha256}, and "
                            "runs there may not download (KDBENCH_OFFLINE); run kdbench fetch on a host with internet")


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pin_failure(file: WeightFile) -> str | None:
    """The cached file's SHA-256 when it does not match the file's pin, else None (nothing
    pinned, or it matches)."""
    if file.sha256 is None:
        return None
    got = _digest(file.path)
    return None if got.startswith(file.sha256) else got


def _usable(file: WeightFile) -> bool:
    """In the cache, a regular file, and matching its pin."""
    return file.path.is_file() and not file.path.is_symlink() and pin_failure(file) is None


# -- fetching -----------------------------------------------------------------------------------
def fetch(files: list[WeightFile], progress: bool = True) -> list[tuple[WeightFile, str]]:
    """Download each file not yet in the cache, or whose cached bytes fail its pin, verified;
    (file, "cached" | "fetched" | "unverified") per distinct file (by its place in the cache: one
    pin, one name). A failed download or a hash mismatch raises a UserError naming the file."""
    distinct: dict[Path, WeightFile] = {}
    for file in files:
        distinct.setdefault(file.path, file)
    return [(file, "cached" if _usable(file) else _fetch_one(file, progress)) for file in distinct.values()]


def _fetch_one(file: WeightFile, progress: bool) -> str:
    """One file, under a lock (array tasks or two launches on a shared file system may ask at once)."""
    folder = file.path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open_no_follow(folder / f".{file.name}.lock", os.O_RDWR | os.O_CREAT)
    except OSError as error:
        raise UserError(f"{folder}: cannot write the weights cache ({error.strerror}); set KDBENCH_CACHE") from None
    with os.fdopen(lock, "r+b"):
        fcntl.flock(lock, fcntl.LOCK_EX)
        if file.path.is_file() or file.path.is_symlink():
            if _usable(file):  # another process fetched it while this one waited
                return "cached"
            print(f"kdbench: {file.path}: does not match its pin {file.sha256}; fetching it again", file=sys.stderr)
            file.path.unlink()
        part = file.path.with_name(file.name + ".part")
        _download_resuming(file, part, progress)
        status = _verify(file, part)
        os.replace(part, file.path)  # its name only now: complete and verified
        return status


def _download_resuming(file: WeightFile, part: Path, progress: bool) -> None:
    """``_download``, resumed after a dropped connection up to ATTEMPTS times; the server's own
    answer (404, 403, ...) is final."""
    import http.client
    import urllib.error

    for attempt in range(1, ATTEMPTS + 1):
        try:
            _download(file, part, progress)
            return
        except (OSError, http.client.HTTPException) as error:  # urllib's errors are OSErrors
            answered = isinstance(error, urllib.error.HTTPError)
            if answered or attempt == ATTEMPTS:
                reason = error if answered else getattr(error, "reason", None) or error
                kept = f" ({_size(part)} bytes kept in {part}: fetch again to resume)" if _size(part) else ""
                raise UserError(f"{file.where}: cannot download {file.url}: {reason}{kept}") from None


def _size(path: Path) -> int:
    """The bytes of a ``.part`` file kdbench wrote; anything else in its place (a link, a FIFO, a
    folder another account planted) is removed and counts as nothing."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    if stat.S_ISDIR(info.st_mode):
        raise OSError(f"{path} is a directory")
    path.unlink()
    return 0


def _open_part(part: Path, resumed: bool):
    """The ``.part`` file to append to (``resumed``), else a new one created exclusively; neither
    follows a link, and the mode is the umask's."""
    if not resumed:
        part.unlink(missing_ok=True)
        return os.fdopen(open_no_follow(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")
    return os.fdopen(open_no_follow(part, os.O_WRONLY | os.O_APPEND), "ab")


def _download(file: WeightFile, part: Path, progress: bool) -> None:
    """Append the rest of ``file`` to ``part``: from where it stops when the server honours Range."""
    import urllib.error
    import urllib.request

    have = _size(part)
    request = urllib.request.Request(file.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing after the bytes we have: the file is all there
            return
        raise
    with response:
        resumed = response.status == 206
        total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
        bar = _bar(file.name, total, have if resumed else 0, progress)
        with _open_part(part, resumed) as out:
            while chunk := response.read1(CHUNK):  # what has arrived, not a whole CHUNK
                out.write(chunk)
                out.flush()  # what arrived is on disk before the next read: an interruption keeps it
                bar.update(len(chunk))
        bar.close()
        if total and _size(part) < total:
            raise OSError(f"the connection closed after {_size(part)} of {total} bytes")


def _verify(file: WeightFile, part: Path) -> str:
    """The downloaded bytes against the expected hash; a mismatch deletes them (a resume would
    only append to wrong bytes) and raises one line naming the file and both hashes."""
    got = _digest(part)
    if file.sha256 is None:
        print(f"kdbench: {file.name}: not verified (its name carries no hash); its sha256 is {got}",
              file=sys.stderr)
        return "unverified"
    if not got.startswith(file.sha256):
        part.unlink()
        raise UserError(f"{file.where}: {file.name}: sha256 {got} does not match the expected {file.sha256} "
                        f"(downloaded from {file.url}; deleted)")
    return "fetched"


class _NoBar:
    def update(self, n):  # tqdm's interface
        pass

    def close(self):
        pass


def _bar(name: str, total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total or None, initial=initial, desc=name, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, dynamic_ncols=True)


# -- what a run reads ---------------------------------------------------------------------------
def local_file(file: WeightFile) -> Path:
    """The cached file, checked against its pin; offline, a missing or mismatching one is an error,
    else it is fetched (again) now."""
    if offline():
        require_cached([file])
    elif not _usable(file):
        fetch([file], progress=False)
    return file.path


def checkpoint_file(checkpoint: str, sha256: str | None, where: str) -> str:
    """A teacher checkpoint as a file: a URL's cached copy, a path unchanged."""
    file = weight_file(checkpoint, where, sha256)
    return checkpoint if file is None else str(local_file(file))


def localize(model_cfg: dict, where: str) -> dict:
    """``model_cfg`` with every pretrained reference replaced by its cached file, in place, so
    mmengine loads from disk and never downloads."""
    for node, slot in list(reference_slots(model_cfg)):
        reference = node[slot]
        file = weight_file(reference, f"{where} ({reference})")
        if file is None:
            continue
        path = str(local_file(file))
        if not reference.startswith("mmcls://"):
            node[slot] = path
        elif slot == "checkpoint":  # mmengine's mmcls loader keeps the backbone's tensors, unprefixed
            node.update(checkpoint=path, prefix=node.get("prefix", "backbone."))
        else:  # a `pretrained` becomes the backbone's Pretrained init_cfg, as mmseg does, with that prefix
            target = node["backbone"] if isinstance(node.get("backbone"), dict) else node
            node["pretrained"] = None
            target["init_cfg"] = {"type": "Pretrained", "checkpoint": path, "prefix": "backbone."}
    return model_cfg
