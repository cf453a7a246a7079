"""An imported MMRazor run as a study (``kdbench import mmrazor --study``), as complete as a
hand-written preset: the distill terms as one method named after what it distils (``cwd_logits``,
``pkd_fpn``), three seeds, resources sized for the recipe, the teacher gate, the reference files
that hold MMRazor's published rows for the method, provenance naming the MMRazor config, and the
import's notes as comments at the top."""

from __future__ import annotations

import math
import re
from pathlib import Path

# Seconds one GPU takes per image of a distillation step (student forward and backward, teacher
# forward), on a V100-class GPU at the datasets' training sizes (Cityscapes 512 x 1024 crops, COCO
# 1333 x 800): sizes the time limit; a run past it is checkpointed and requeued, not lost.
SECONDS_PER_IMAGE = {"seg": 0.3, "det": 0.4}
TIME_MARGIN = 1.25
# MMRazor's published result for each of its configs (configs/distill/*/README.md and metafile.yml),
# and the reference file (studies/references/) that holds it as this config's only row of its
# method, so that a one-cell study matches it and nothing else.
PUBLISHED = {
    "cwd_logits_pspnet_r101-d8_pspnet_r18-d8_4xb2-80k_cityscapes-512x1024": (
        "mmrazor.csv", "75.54 mIoU (configs/distill/mmseg/cwd/README.md)"),
    "mgd_fpn_retina_x101_retina_r50_2x_coco": ("mmrazor_mgd.csv", "41.0 box AP (configs/distill/mmdet/mgd/README.md)"),
    "fbkd_fpn_faster-rcnn_r101_faster-rcnn_r50_1x_coco": (None, "39.3 box AP (configs/distill/mmdet/fbkd/README.md)"),
    "pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco": (
        None, "40.3 box AP in configs/distill/mmdet/pkd/README.md, 40.4 in its metafile.yml "
              "(studies/mmrazor_pkd_coco.yaml)"),
    "pkd_fpn_retina_x101_retina_r50_2x_coco": (
        None, "40.8 box AP (configs/distill/mmdet/pkd/README.md; studies/mmrazor_pkd_coco.yaml)"),
    "pkd_fpn_reppoints_x101-dcn_reppoints_r50_2x_coco": (
        None, "42.3 box AP (configs/distill/mmdet/pkd/README.md; studies/mmrazor_pkd_coco.yaml)"),
    "pkd_fpn_fcos_x101_retina_r50_1x_coco": (None, "40.3 box AP (configs/distill/mmdet/pkd/README.md)"),
    "pkd_fpn_mask-rcnn_swin_retina_r50_2x_coco": (None, "41.5 box AP (configs/distill/mmdet/pkd/README.md)"),
    "cwd_cls_head_gfl_r101_fpn_gfl_r50_fpn_1x_coco": (
        None, "none for this config: the README's 41.9 comes from the 0.x config that distilled the classification "
              "head, not the neck (studies/mmrazor_cwd_coco_gfl.yaml)"),
}


def _where(location: str) -> str:
    """What a location distils, in MMRazor's words: fpn, logits, head or the module's name."""
    module = location.split("[")[0]
    top = module.split(".")[0]
    if top == "neck":
        return "fpn"
    if module == "decode_head.conv_seg":
        return "logits"
    if top in ("bbox_head", "decode_head", "rpn_head", "roi_head"):
        return "head"
    return re.sub(r"[^A-Za-z0-9]+", "_", module).strip("_")


def method_name(terms: list[dict]) -> str:
    methods = list(dict.fromkeys(t["method"] for t in terms))
    places = list(dict.fromkeys(_where(t["student_location"]) for t in terms))
    return "_".join(["+".join(methods), *places])


def resources(run: dict, gpus: int, images_per_gpu: int) -> dict:
    """The recipe's GPUs, and a time limit for its iterations at SECONDS_PER_IMAGE (whole hours)."""
    seconds = run["schedule"]["iterations"] * images_per_gpu * SECONDS_PER_IMAGE[run["task"]] * TIME_MARGIN
    return {"gpus": gpus, "cpus": 4, "mem_gb": 64, "time_min": max(60, math.ceil(seconds / 3600) * 60)}


def _provenance(run: dict, config: str, method: str) -> dict:
    where = f"MMRazor config {config}"
    found = {"base.teacher.config": f"{where} (model.teacher.cfg_path)",
             "base.teacher.checkpoint": f"{where} (model.teacher_ckpt; see the notes above)",
             "base.student.config": f"{where} (model.architecture)",
             "base.schedule.iterations": f"{where} with its _base_ files (train_cfg)",
             "base.schedule.batch_size": f"{where} (train_dataloader.batch_size x GPUs)",
             "base.schedule.lr": f"{where} with its _base_ files (optim_wrapper.optimizer)",
             "base.schedule.lr_schedule": f"{where} with its _base_ files (param_scheduler)",
             f"methods.{method}": f"{where} (model.distiller)"}
    if "expect" in run["teacher"]:
        found["base.teacher.expect"] = "the teacher checkpoint's metafile entry in the installed mmdet / mmseg"
    if "grad_clip" in run["schedule"]:
        found["base.schedule.grad_clip"] = f"{where} with its _base_ files (optim_wrapper.clip_grad.max_norm)"
    return found


def as_study(imported, output: str | Path | None = None) -> dict:
    """The study of an ``Imported`` run (runners.mmrazor_import); ``output``: where it is written,
    whose ``references/`` folder decides which reference files it can list."""
    run = imported.run
    method = method_name(run["distill"])
    base = {k: v for k, v in run.items() if k not in ("name", "distill", "seed")}
    study = {"name": re.sub(r"[^A-Za-z0-9_.-]", "_", run["name"]), "base": base,
             "methods": {method: run["distill"]}, "seeds": [0, 1, 2],
             "resources": resources(run, imported.gpus, imported.images_per_gpu)}
    reference = PUBLISHED.get(run["name"], (None, ""))[0]
    if reference and output and (Path(output).parent / "references" / reference).is_file():
        study["references"] = [reference]
    study["provenance"] = _provenance(run, run["name"] + ".py", method)
    return study


def study_text(imported, config: str | Path, output: str | Path | None) -> str:
    """The study as YAML, its header saying where it came from and what the import changed."""
    import yaml

    published = PUBLISHED.get(imported.run["name"], (None, "none known to kdbench"))[1]
    header = [f"# Imported by `kdbench import mmrazor` from {Path(config).name} (MMRazor 1.x).",
              f"# MMRazor's published result: {published}.",
              "# MMRazor reports one run of a recipe; the study runs three seeds.",
              *[f"# Note: {line}" for line in imported.notes]]
    return "\n".join(header) + "\n" + yaml.safe_dump(as_study(imported, output), sort_keys=False, width=120)


def import_text(config: str, gpus: int | None, study: bool, output: str | None) -> str:
    """What ``kdbench import mmrazor`` writes: the run (JSON) or the study (YAML); the notes go to
    stderr as well, one line each."""
    import json
    import sys

    from kdbench.spec import parse_run
    from runners.mmrazor_import import convert_with_notes

    imported = convert_with_notes(config, gpus)
    parse_run(imported.run, config)  # what is written is a valid run
    for note in imported.notes:
        print(f"kdbench import: note: {note}", file=sys.stderr)
    return study_text(imported, config, output) if study else json.dumps(imported.run, indent=2) + "\n"
