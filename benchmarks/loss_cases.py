"""What the loss suite compares: its cases (every registered distillation method at the settings of
``studies/paper_table2_cityscapes.yaml``, on the paper's logits and feature-map shapes), their
inputs, and the two formulations of each (kdbench's module and the plain-autograd reference of
benchmarks/references.py), called alike. ``benchmarks.losses`` checks and times them;
``benchmarks.memory`` measures their peak memory.

A new registered loss gets (the bench refuses to run while one has none): its ``Case`` rows in
``_cases()`` at its published settings, on the logits and/or the feature map (``max_scale`` and a
reason where the reference is too slow at full size on a CPU); its plain-autograd formulation in
benchmarks/references.py, the textbook math with nothing fused or blocked; and that formulation
in ``formulations``' table (a method that owns layers or an optimiser gets its own function, as
FBKD and HO, with both sides starting from the same weights). Every case is then held to at most
its reference's time and peak extra memory (``benchmarks.losses.targets``; CWD to half)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.references import (
    IGNORE,
    reference_afdcd,
    reference_at,
    reference_cirkd_memory,
    reference_cirkd_pair,
    reference_cwd,
    reference_dist,
    reference_fbkd,
    reference_fgd,
    reference_fitnets,
    reference_ho_critic_step,
    reference_ho_student,
    reference_ifvd,
    reference_local,
    reference_mgd,
    reference_norm_divergence,
    reference_pa,
    reference_pi,
    reference_pkd,
)

SHAPES = {"logits": (8, 19, 64, 128), "feature_map": (8, 512, 64, 64)}
N_CLASSES = 19


@dataclass(frozen=True)
class Case:
    """One method (with its parameters) on one input; ``term`` is "loss" (forward + backward of the
    loss) or "critic_step" (HO's discriminator update, which does its own backward)."""

    method: str
    input: str
    params: dict = field(default_factory=dict)
    variant: str = ""  # a label that tells apart cases of one method (norm x divergence)
    term: str = "loss"
    max_scale: float = 1.0  # the largest spatial scale this case runs at on a CPU, and why
    scale_reason: str = ""
    targets: bool = False

    @property
    def name(self) -> str:
        label = self.method + (f"({self.variant})" if self.variant else "")
        return label + (" critic step" if self.term == "critic_step" else "")

    @property
    def key(self) -> str:
        return f"{self.name}/{self.input}"


def _cases() -> list[Case]:
    # Weights and temperatures: studies/paper_table2_cityscapes.yaml (CWD: the paper's T = 4 and
    # alpha = 3 on logits, 50 on the feature map; the baselines at their authors' defaults). The
    # ablation's (channel, kl) cell is CWD's own kernel: on the logits only (the cwd rows cover it).
    both = ("logits", "feature_map")
    cases = [Case("cwd", x, {"tau": 4.0, "loss_weight": 3.0 if x == "logits" else 50.0}, targets=True) for x in both]
    for norm, divergence, inputs in [("channel", "kl", ("logits",)), ("spatial", "kl", both),
                                     ("channel_mean", "kl", both), ("none", "kl", both),
                                     ("channel", "mse", ("logits",)), ("spatial", "mse", ("logits",))]:
        params = {"norm": norm, "divergence": divergence, "tau": 4.0 if divergence == "kl" else 1.0}
        cases += [Case("norm_divergence", x, params, variant=f"{norm}, {divergence}") for x in inputs]
    cases += [Case("pi", x, {"tau": 1.0, "loss_weight": 10.0}) for x in both]
    cases += [Case("at", x, {"loss_weight": 1e4}) for x in both]
    cases += [Case("fitnets", "feature_map", {"loss_weight": 10.0})]
    cases += [Case("local", "logits", {"loss_weight": 1.0}),
              Case("local", "feature_map", {"loss_weight": 1.0}, max_scale=0.25,
                   scale_reason="time: the unfolded reference holds 9 copies of each map and the replicate "
                                "padding's backward is slow on a CPU; at half size one reference forward + "
                                "backward already takes about 4 s on 2 cores")]
    cases += [Case("pa", x, {"pool_scale": 0.5, "loss_weight": 1.0}) for x in both]
    cases += [Case("ifvd", "logits", {"loss_weight": 200.0}),
              Case("ifvd", "feature_map", {"loss_weight": 200.0}, max_scale=0.5,
                   scale_reason="time: the per-class reference makes 19 masked copies of the map; at half size "
                                "one reference forward + backward takes about 1 s on 2 cores")]
    cases += [Case("fbkd", "feature_map", {"loss_weight": 1.0}, max_scale=0.5,
                   scale_reason="time: two non-local blocks' position-by-position products; at half size one "
                                "forward + backward takes 1 to 2 s on 2 cores")]
    cases += [Case("ho", "logits", {"loss_weight": 0.001}),
              Case("ho", "logits", {"loss_weight": 0.001}, term="critic_step")]
    return cases + _modern_cases() + _cirkd_afdcd_cases()


def _modern_cases() -> list[Case]:
    """PKD, MGD, DIST and FGD at their authors' defaults (no paper Table 2 setting exists for them)."""
    cases = [Case("pkd", x, {"loss_weight": 1.0}) for x in ("logits", "feature_map")]
    cases += [Case("mgd", "feature_map", {"alpha_mgd": 2e-5, "lambda_mgd": 0.65}, max_scale=0.25,
                   scale_reason="time: the generation block's two 512-channel 3x3 convolutions; at a quarter size "
                                "one forward + backward takes 1 to 3 s on 2 cores")]
    dist = {"tau": 1.0, "inter_loss_weight": 1.0, "intra_loss_weight": 1.0, "loss_weight": 1.0}
    cases += [Case("dist", "logits", {**dist, "intra": intra}, variant=f"intra {intra}")
              for intra in ("pixels", "batch")]
    cases += [Case("fgd", "feature_map", {"temp": 0.5, "alpha_fgd": 1e-3, "beta_fgd": 5e-4, "gamma_fgd": 1e-3,
                                          "lambda_fgd": 5e-6, "loss_weight": 1.0})]
    return cases


def _cirkd_afdcd_cases() -> list[Case]:
    """CIRKD and Af-DCD at their authors' defaults, on the feature map only (where their code applies them)."""
    return [Case("cirkd_pair", "feature_map", {"tau": 0.1, "loss_weight": 1.0}, max_scale=0.5,
                 scale_reason="memory: the reference keeps every pair's (HW x HW) maps, 64 pairs of 4096 x 4096 at "
                              "full size (about 16 GB)"),
            Case("cirkd_memory", "feature_map", {"loss_weight": 1.0}, max_scale=0.5,
                 scale_reason="memory: the reference keeps two (pixels x 4104 entries) logits per term, about 4 GB "
                              "at full size"),
            # Af-DCD with one position per patch and no pooling: its patches and groups fit every map
            # size the suite runs at (its defaults, 4x4 patches after a 4x4 pool, need 16x16 maps at least).
            Case("afdcd", "feature_map", {"pool_size": 0, "patch_size": [1, 1], "loss_weight": 1.0}, max_scale=0.25,
                 scale_reason="time: the projector's two 512-channel 3x3 convolutions; at quarter size one "
                              "forward + backward takes about 2 s on 2 cores")]


CASES = _cases()


def cases(methods=None) -> list[Case]:
    """The cases of the given built-in methods (all when None); an unknown name is an error. A
    plugin's loss, registered in this process or not, has no plain reference here to compare with."""
    from kdbench.errors import UserError
    from kdbench.losses.params import BUILTINS

    # A head loss (ld, crosskd: ``needs_heads``) is called with two detection heads, not two maps:
    # it has no case here (benchmarks/README.md says why).
    registered = sorted(name for name, (_, params) in BUILTINS.items() if not params.needs_heads)
    uncovered = sorted(set(registered) - {case.method for case in CASES})
    if uncovered:  # a method added to the registry must get a case and a reference here
        raise UserError(f"bench losses: no benchmark case for {', '.join(uncovered)}")
    if methods is None:
        return list(CASES)
    unknown = sorted(set(methods) - set(registered))
    if unknown:
        raise UserError(f"bench losses: unknown method(s) {', '.join(unknown)}; valid: {', '.join(registered)}")
    return [case for case in CASES if case.method in set(methods)]


def scaled(shape: tuple, scale: float) -> tuple:
    n, c, h, w = shape
    return (n, c, max(2, int(h * scale)), max(2, int(w * scale)))


def case_scale(case: Case, scale: float, device: str = "cpu") -> tuple[float, str]:
    """The scale a case runs at and why it is below the one asked for (the CPU limits only)."""
    if device == "cpu" and scale > case.max_scale:
        return case.max_scale, case.scale_reason
    return scale, ""


def make_inputs(case: Case, shape: tuple, device: str = "cpu", seed: int = 0) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    preds_S = (torch.randn(shape, generator=generator) * 3).to(device).requires_grad_()
    preds_T = (torch.randn(shape, generator=generator) * 3).to(device)
    inputs = {"preds_S": preds_S, "preds_T": preds_T}
    if case.method in ("ifvd", "cirkd_memory"):
        n, _, h, w = shape
        labels = torch.randint(0, N_CLASSES, (n, h, w), generator=generator)
        labels[torch.rand((n, h, w), generator=generator) < 0.1] = IGNORE
        inputs["labels"] = labels.to(device)
    if case.method == "fgd":  # four boxes on each image, 8 times the map's size (an FPN level of stride 8)
        n, _, h, w = shape
        size = torch.tensor([8 * w, 8 * h, 8 * w, 8 * h], dtype=torch.float32)
        corners = torch.rand((n, 4, 2, 2), generator=generator).sort(dim=2).values.reshape(n, 4, 4)
        inputs["boxes"] = [(corners[i] * size).to(device) for i in range(n)]
        inputs["image_shapes"] = [(8 * h, 8 * w)] * n
    return inputs


class _Formulation:
    """One side of a case, called as ``f(inputs)``: forward + backward; ``value`` and ``grads()``
    give what the agreement check compares."""

    def __init__(self, run: Callable, grads: Callable):
        self._run, self._grads, self.value = run, grads, None

    def __call__(self, inputs: dict) -> None:
        self.value = self._run(inputs)

    def grads(self, inputs: dict) -> list:
        return self._grads(inputs)


def _input_grad(inputs: dict) -> list:
    return [inputs["preds_S"].grad]


def formulations(case: Case, device: str = "cpu") -> dict[str, _Formulation]:
    """{"kdbench": ..., "reference": ...} for a case, with the same parameters (and, for HO, the
    same critic weights at the start)."""
    import copy

    import torch

    from kdbench import losses

    params = dict(case.params)
    if case.method == "ho":
        torch.manual_seed(0)
        module = losses.build("ho", in_channels=SHAPES["logits"][1], **params).to(device)
        # Both sides get a copy, made one after the other: which side keeps the weights allocated
        # first moved this case's time by up to 10% on a CPU (where they lie, not what runs).
        critic, module.discriminator = copy.deepcopy(module.discriminator), copy.deepcopy(module.discriminator)
        if case.term == "critic_step":
            optimizer = torch.optim.Adam(critic.parameters(), lr=module.lr_d, betas=(0.9, 0.99))

            def ours(x):
                return torch.tensor(module.discriminator_step(x["preds_S"], x["preds_T"])["loss_d"])

            def reference(x):
                return reference_ho_critic_step(critic, optimizer, x["preds_S"], x["preds_T"], module.d_weight,
                                                module.gp_weight)

            return {"kdbench": _Formulation(ours, lambda x: [p.grad for p in module.discriminator.parameters()]),
                    "reference": _Formulation(reference, lambda x: [p.grad for p in critic.parameters()])}

        def ours(x):
            value = module(x["preds_S"], x["preds_T"])
            value.backward()
            return value.detach()

        def reference(x):
            value = reference_ho_student(critic, x["preds_S"], params["loss_weight"])
            value.backward()
            return value.detach()

        return {"kdbench": _Formulation(ours, _input_grad), "reference": _Formulation(reference, _input_grad)}

    if case.method == "fbkd":
        return _fbkd_formulations(case, device)
    if case.method == "mgd":
        return _mgd_formulations(case, device)
    if case.method in ("cirkd_memory", "afdcd"):
        return _trained_part_formulations(case, device)
    if case.method == "fgd":
        return _fgd_formulations(case, device)
    module = losses.build(case.method, **params)
    reference_fn = {
        "cwd": lambda x: reference_cwd(x["preds_S"], x["preds_T"], params["tau"], params["loss_weight"]),
        "norm_divergence": lambda x: reference_norm_divergence(x["preds_S"], x["preds_T"], params["norm"],
                                                               params["divergence"], params["tau"], 1.0),
        "pi": lambda x: reference_pi(x["preds_S"], x["preds_T"], params["tau"], params["loss_weight"]),
        "at": lambda x: reference_at(x["preds_S"], x["preds_T"], params["loss_weight"]),
        "fitnets": lambda x: reference_fitnets(x["preds_S"], x["preds_T"], params["loss_weight"]),
        "local": lambda x: reference_local(x["preds_S"], x["preds_T"], params["loss_weight"]),
        "pa": lambda x: reference_pa(x["preds_S"], x["preds_T"], params["loss_weight"]),
        "ifvd": lambda x: reference_ifvd(x["preds_S"], x["preds_T"], x["labels"], params["loss_weight"]),
        "pkd": lambda x: reference_pkd(x["preds_S"], x["preds_T"], params["loss_weight"]),
        "dist": lambda x: reference_dist(x["preds_S"], x["preds_T"], **params),
        "cirkd_pair": lambda x: reference_cirkd_pair(x["preds_S"], x["preds_T"], params["tau"], False,
                                                     params["loss_weight"]),
    }[case.method]

    return _pair(lambda x: module(*(x[k] for k in ("preds_S", "preds_T", "labels") if k in x)), reference_fn)


def _pair(ours, reference) -> dict[str, _Formulation]:
    """The kdbench and reference formulations of a case from two functions of the inputs that each
    return the loss: each runs forward and backward and returns the value."""
    def run(loss_of):
        def step(x):
            value = loss_of(x)
            value.backward()
            return value.detach()
        return _Formulation(step, _input_grad)

    return {"kdbench": run(ours), "reference": run(reference)}


def _fbkd_formulations(case: Case, device: str) -> dict[str, _Formulation]:
    """FBKD builds its adapters and non-local blocks for the channel counts it is given: built here
    for the case's channels, and copied, so that both formulations start from the same weights."""
    import copy

    import torch

    from kdbench import losses

    torch.manual_seed(0)
    module = losses.build("fbkd", **case.params)
    channels = SHAPES[case.input][1]
    probe = torch.zeros(1, channels, 4, 4, device=device)
    module.build_connectors(probe, probe)
    module.train()
    layers = {**copy.deepcopy(dict(module.student_adapt.items())),
              "teacher_non_local": copy.deepcopy(module.teacher_non_local)}

    return _pair(lambda x: module(x["preds_S"], x["preds_T"]),
                 lambda x: reference_fbkd(layers, x["preds_S"], x["preds_T"], module.weights, module.spatial_t,
                                          module.loss_weight))


def _trained_part_formulations(case: Case, device: str) -> dict[str, _Formulation]:
    """CIRKD's memory loss and Af-DCD own trained parts (and CIRKD its queues), built for the case's
    channels and copied, so that both formulations start from the same weights and queues; the random
    draws are the same where both sides start from the same seed (the agreement check seeds them)."""
    import copy

    import torch

    from kdbench import losses

    sized = {"num_classes": N_CLASSES} if case.method == "cirkd_memory" else {}  # CIRKD's queues: per class
    torch.manual_seed(0)
    module = losses.build(case.method, **sized, **case.params)
    probe = torch.zeros(1, SHAPES[case.input][1], 4, 4, device=device)
    module.build_connectors(probe, probe)
    module.to(device).train()
    layers = {name: copy.deepcopy(part) for name, part in module.named_children()}
    layers.update({name: buffer.clone() for name, buffer in module.named_buffers() if "." not in name})
    settings = {**losses.parameters(case.method), **case.params}
    if case.method == "cirkd_memory":  # train_cirkd.py's entries per class
        settings.update(pixel_contrast_size=4096 // N_CLASSES + 1, region_contrast_size=1024 // N_CLASSES + 1)

        def reference_fn(x):
            return reference_cirkd_memory(layers, x["preds_S"], x["preds_T"], x["labels"], settings)
    else:
        def reference_fn(x):
            return reference_afdcd(layers, x["preds_S"], x["preds_T"], settings)

    return _pair(lambda x: module(*(x[k] for k in ("preds_S", "preds_T", "labels") if k in x)), reference_fn)


def _mgd_formulations(case: Case, device: str) -> dict[str, _Formulation]:
    """MGD builds its generation block for the channel counts it is given: built here for the
    case's channels, and copied, so that both formulations start from the same weights (the
    random mask is drawn alike on both sides: the agreement check seeds each call the same)."""
    import copy

    import torch

    from kdbench import losses

    torch.manual_seed(0)
    module = losses.build("mgd", **case.params)
    channels = SHAPES[case.input][1]
    module.build_connectors(channels, channels, device)
    layers = {"generation": copy.deepcopy(module.generation)}

    return _pair(lambda x: module(x["preds_S"], x["preds_T"]),
                 lambda x: reference_mgd(layers, x["preds_S"], x["preds_T"], module.alpha_mgd, module.lambda_mgd,
                                         module.loss_weight))


def _fgd_formulations(case: Case, device: str) -> dict[str, _Formulation]:
    """FGD builds its GcBlocks for the channel counts it is given: built here for the case's
    channels, and copied, so that both formulations start from the same weights."""
    import copy

    import torch

    from kdbench import losses

    torch.manual_seed(0)
    module = losses.build("fgd", **case.params)
    channels = SHAPES[case.input][1]
    module.build_connectors(channels, channels, device)
    layers = {name: copy.deepcopy(part) for name, part in module.named_children()}
    settings = {**losses.parameters("fgd"), **case.params}

    return _pair(lambda x: module(x["preds_S"], x["preds_T"], boxes=x["boxes"], image_shapes=x["image_shapes"]),
                 lambda x: reference_fgd(layers, x["preds_S"], x["preds_T"], x["boxes"], x["image_shapes"], settings))
