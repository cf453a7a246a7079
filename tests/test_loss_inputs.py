"""The inputs a loss declares it needs beyond the two maps (kdbench.losses.params.INPUTS): a plugin
declares them as class attributes, the trainer gives a loss that needs the boxes each image's
ground-truth boxes and shape, and a run of the wrong task is refused."""

import pytest
import torch
from torch import nn

from kdbench import losses
from kdbench.errors import UserError
from kdbench.spec import parse_run

PLUGIN = "boxes_declared_by_a_class_attribute"


class _BoxCount(nn.Module):
    """A plugin-style loss registered by one decorator: the number of boxes times the maps' difference."""

    needs_boxes = True
    needs_adapter = False

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, preds_S, preds_T, boxes=None, image_shapes=None):
        return self.loss_weight * sum(len(b) for b in boxes) * (preds_S - preds_T).abs().mean()


@pytest.fixture
def plugin():
    """The plugin loss, registered when a test first needs it (not at collection: a registry read at import
    elsewhere, such as the golden values', lists the built-ins alone)."""
    if PLUGIN not in losses.available():
        losses.register(PLUGIN)(_BoxCount)
    return PLUGIN


def test_a_class_attribute_declares_that_a_plugin_loss_needs_boxes(plugin):
    declared = losses.declaration(plugin)
    assert declared.needs_boxes is True and declared.needs_labels is False
    assert losses.get(plugin).needs_boxes is True


def test_the_trainer_gives_each_images_boxes_in_pixels_and_its_shape_before_padding(plugin):
    """Guarantee: A loss that declares `needs_boxes` is called as `loss(preds_S, preds_T, boxes=[(n_i, 4)],
    image_shapes=[(h, w)])`: each image's ground-truth boxes (x1, y1, x2, y2 in its pixels, from mmdet's box
    structure or a plain tensor) and its resized shape before the batch's padding; a loss that needs
    neither boxes nor labels gets the two maps alone."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData

    from kdbench.spec import Term
    from runners.distill import DistillModel

    samples = []
    for boxes, shape in ((HorizontalBoxes(torch.tensor([[1.0, 2.0, 30.0, 40.0]])), (48, 64)),
                         (torch.zeros(0, 4), (64, 40))):
        sample = DetDataSample()
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.zeros(len(boxes), dtype=torch.long))
        sample.set_metainfo({"img_shape": shape, "batch_input_shape": (64, 64)})
        samples.append(sample)
    term = Term(name="x", method=plugin, params={}, weight=1.0,
                student_location=("neck",), teacher_location=("neck",))
    args, kwargs = DistillModel._loss_inputs(None, term, samples)
    assert args == () and sorted(kwargs) == ["boxes", "image_shapes"]
    assert kwargs["image_shapes"] == [(48, 64), (64, 40)]
    assert torch.equal(kwargs["boxes"][0], torch.tensor([[1.0, 2.0, 30.0, 40.0]]))
    assert kwargs["boxes"][1].shape == (0, 4)
    plain = Term(name="y", method="cwd", params={}, weight=1.0, student_location=("neck",), teacher_location=("neck",))
    assert DistillModel._loss_inputs(None, plain, samples) == ((), {})


@pytest.mark.parametrize("task,method,needed", [("seg", PLUGIN, "ground-truth boxes"),
                                                ("seg", "fgd", "ground-truth boxes"),
                                                ("det", "ifvd", "segmentation labels")])
def test_a_loss_that_needs_an_input_the_runs_task_lacks_is_refused_naming_it(plugin, task, method, needed):
    model = "tiny_seg" if task == "seg" else "tiny_det"
    run = {"task": task, "student": {"config": f"{model}_student"},
           "teacher": {"config": f"{model}_teacher", "checkpoint": "t.pth"}, "dataset": {"name": "fashion_scenes"},
           "distill": [{"method": method, "student_location": "neck"}]}
    with pytest.raises(UserError, match=rf"distill\[0\]\.method: '{method}' needs {needed}, which a {task} run"):
        parse_run(run)
