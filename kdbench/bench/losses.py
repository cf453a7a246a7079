"""The loss suite: every registered distillation loss against a straightforward formulation of the
same math in plain torch autograd (kdbench/bench/references.py), at the paper's shapes.

Each case is one method (at the settings of ``studies/paper_table2_cityscapes.yaml``) on one input:
the logits (N, 19 classes, H/8, W/8 of a 512x1024 crop) and the PSP head's feature map (N, 512,
64, 64 of a 512x512 crop). Every method runs on both, as in the paper's Table 2, except HO (logits
only, as in the paper) and FitNets (a feature mimic: feature map only). The references are the
textbook formulations (CWD: MMRazor's ``ChannelWiseDivergence``, ANCHORS.md section 2); each
method's own definition is in its module's docstring.

For each case: agreement of value and gradient (1e-5 relative; the gradient relative to its largest
element), forward + backward time (median of interleaved repeats, kdbench and reference
alternating, the first round dropped), and peak extra memory: on a CPU the peak resident set above
the resident set with the inputs (and the gradient buffer) in place, read from /proc in one
subprocess with glibc's mmap threshold pinned so that every tensor of 64 KiB or more is returned to
the system when freed (CPU torch has no allocator statistics); on a GPU
``torch.cuda.max_memory_allocated`` above what is allocated before the call. Where CUDA is
available every case also runs there, and the CWD rows report the fraction of the memory-bandwidth
bound they reach (read S and T once, write the gradient once, at the device's peak bandwidth).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from kdbench.bench.bandwidth import bandwidth_fields, device_bandwidth
from kdbench.bench.references import (
    IGNORE,
    reference_at,
    reference_cwd,
    reference_fitnets,
    reference_ho_critic_step,
    reference_ho_student,
    reference_ifvd,
    reference_local,
    reference_norm_divergence,
    reference_pa,
    reference_pi,
)
from kdbench.bench.timing import interleaved_medians, synchronize

SHAPES = {"logits": (8, 19, 64, 128), "feature_map": (8, 512, 64, 64)}
N_CLASSES = 19
TOLERANCE = 1e-5
TARGET_RATIO = 0.5  # CWD only: time and peak extra memory <= 0.5x the reference


# --- the cases ------------------------------------------------------------------------------------

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
    cases += [Case("ho", "logits", {"loss_weight": 0.001}),
              Case("ho", "logits", {"loss_weight": 0.001}, term="critic_step")]
    return cases


CASES = _cases()


def cases(methods=None) -> list[Case]:
    """The cases of the given registered methods (all when None); an unknown name is an error."""
    from kdbench import losses
    from kdbench.errors import UserError

    registered = losses.available()
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
    if case.method == "ifvd":
        n, _, h, w = shape
        labels = torch.randint(0, N_CLASSES, (n, h, w), generator=generator)
        labels[torch.rand((n, h, w), generator=generator) < 0.1] = IGNORE
        inputs["labels"] = labels.to(device)
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
        critic = copy.deepcopy(module.discriminator)
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
    }[case.method]

    def ours(x):
        args = (x["preds_S"], x["preds_T"]) + ((x["labels"],) if "labels" in x else ())
        value = module(*args)
        value.backward()
        return value.detach()

    def reference(x):
        value = reference_fn(x)
        value.backward()
        return value.detach()

    return {"kdbench": _Formulation(ours, _input_grad), "reference": _Formulation(reference, _input_grad)}


def _clear_grads(inputs: dict) -> None:
    inputs["preds_S"].grad = None


def agreement(case: Case, shape: tuple, device: str = "cpu") -> dict:
    """Value and gradient of both formulations on the same inputs, relative differences."""
    import torch

    inputs = make_inputs(case, shape, device)
    values, grads = {}, {}
    for name, formulation in formulations(case, device).items():
        _clear_grads(inputs)
        torch.manual_seed(1)  # the critic step's interpolation weights are drawn the same on both sides
        formulation(inputs)
        values[name] = float(formulation.value)
        grads[name] = [g.detach().clone() for g in formulation.grads(inputs)]
    reference = values["reference"]
    value_diff = abs(values["kdbench"] - reference) / max(abs(reference), 1e-30)
    grad_diff = max(
        (float((ours - ref).abs().max()) / max(float(ref.abs().max()), 1e-30)
         for ours, ref in zip(grads["kdbench"], grads["reference"])),
        default=0.0,
    )
    return {"value_rel_diff": value_diff, "grad_rel_diff": grad_diff,
            "agrees": value_diff <= TOLERANCE and grad_diff <= TOLERANCE}


def checked_agreement(case: Case, shape: tuple, device: str = "cpu") -> dict:
    """``agreement``, checked twice more when it fails. A formula that differs fails every time;
    a result that agrees on both repeats was a one-off (seen once in CI, never reproduced in
    thousands of runs) and is reported as such (``unstable_first_check``), not hidden."""
    first = agreement(case, shape, device)
    if first["agrees"]:
        return first
    repeats = [agreement(case, shape, device) for _ in range(2)]
    if all(r["agrees"] for r in repeats):
        return {**repeats[-1], "unstable_first_check": {k: first[k] for k in ("value_rel_diff", "grad_rel_diff")}}
    return max([first, *repeats], key=lambda r: max(r["value_rel_diff"], r["grad_rel_diff"]))


def timing(case: Case, shape: tuple, repeats: int, device: str = "cpu") -> dict:
    inputs = make_inputs(case, shape, device)
    sides = formulations(case, device)
    median = interleaved_medians({name: partial(formulation, inputs) for name, formulation in sides.items()},
                                 repeats, partial(synchronize, device), prepare=partial(_clear_grads, inputs))
    return {"kdbench_s": median["kdbench"], "reference_s": median["reference"],
            "time_ratio": median["kdbench"] / median["reference"]}


# --- peak extra memory ------------------------------------------------------------------------------

def _peak_cuda(case: Case, shape: tuple) -> dict:
    import torch

    out = {}
    for name in ("kdbench", "reference"):
        # Lazy initialisation (cuBLAS, cuDNN workspaces) first: it is not the loss's memory.
        formulations(case, "cuda")[name](make_inputs(case, scaled(shape, 0.25), "cuda"))
        sides = formulations(case, "cuda")
        inputs = make_inputs(case, shape, "cuda")
        inputs["preds_S"].grad = torch.zeros_like(inputs["preds_S"])  # the same on both sides: not counted
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        sides[name](inputs)
        torch.cuda.synchronize()
        out[f"{name}_bytes"] = torch.cuda.max_memory_allocated() - before
        del inputs, sides
    return out


_MEMORY_PROBE = """
import json, sys, torch
from kdbench.bench.losses import CASES, formulations, make_inputs, scaled

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

torch.set_num_threads(int(sys.argv[1]))
by_key = {case.key: case for case in CASES}
for job in json.loads(sys.argv[2]):
    case, shape = by_key[job["key"]], tuple(job["shape"])
    result = {"key": job["key"]}
    for name in ("kdbench", "reference"):
        formulations(case)[name](make_inputs(case, scaled(shape, 0.25)))  # lazy initialisation first
        sides = formulations(case)
        inputs = make_inputs(case, shape)
        inputs["preds_S"].grad = torch.zeros_like(inputs["preds_S"])  # the same on both sides: not counted
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak-RSS mark (VmHWM) to the current resident set
        before = status("VmRSS")
        sides[name](inputs)
        result[name + "_bytes"] = status("VmHWM") - before
        del sides, inputs
    print(json.dumps(result), flush=True)
"""


def _peak_cpu(jobs: list[dict], threads: int) -> dict[str, dict]:
    """Peak extra resident memory of each job's two formulations, in one subprocess."""
    if not jobs:
        return {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(threads), json.dumps(jobs)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"bench losses: the memory probe failed: {result.stderr.strip()[-2000:]}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row.pop("key"): row for row in rows}


# --- the suite --------------------------------------------------------------------------------------

def _row_head(case: Case, device: str, scale: float, label: str | None = None) -> dict:
    """A row's description of its case: the shape at the scale the case runs at on ``device``
    ("cpu" or "cuda"; ``label`` names the device in the row, default ``device``) and why."""
    case_scale_, reason = case_scale(case, scale, device)
    return {"suite": "losses", "device": label or device, "method": case.name, "registry_name": case.method,
            "input": case.input, "shape": list(scaled(SHAPES[case.input], case_scale_)), "params": case.params,
            "scale": case_scale_, "scale_reason": reason, "key": case.key}


def run(scale: float = 1.0, repeats: int = 5, methods=None,
        progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per case (and per device: the CPU, and the GPU where CUDA is available); ``methods``
    picks registered method names (all when None); ``progress`` is told each case as it starts."""
    import torch

    selected = cases(methods)
    rows = []
    for case in selected:
        if progress:
            progress(f"{case.name} on {case.input} (cpu)")
        row = _row_head(case, "cpu", scale)
        shape = tuple(row["shape"])
        if case.method == "cwd":  # which CWD forward ran on the CPU (see kdbench/losses/_native.py)
            from kdbench.losses._native import cwd_cpu

            row["cwd_kernel"] = "compiled" if cwd_cpu() is not None else "blocked"
        row.update(checked_agreement(case, shape))
        row.update(timing(case, shape, repeats))
        rows.append(row)
    if progress:
        progress("peak memory (cpu, one subprocess)")
    memory = _peak_cpu([{"key": row["key"], "shape": row["shape"]} for row in rows], torch.get_num_threads())
    for row in rows:
        row.update(memory[row["key"]])
    if torch.cuda.is_available():
        bandwidth = device_bandwidth()
        for case in selected:
            if progress:
                progress(f"{case.name} on {case.input} ({bandwidth['device']})")
            row = _row_head(case, "cuda", scale, label=bandwidth["device"])
            shape = tuple(row["shape"])
            row.update(checked_agreement(case, shape, "cuda"))
            row.update(timing(case, shape, repeats, "cuda"))
            row.update(_peak_cuda(case, shape))
            if case.targets:
                row.update(bandwidth_fields(shape, row["kdbench_s"], bandwidth))
            rows.append(row)
    by_key = {case.key: case for case in selected}
    for row in rows:
        reference_bytes = row["reference_bytes"]
        row["memory_ratio"] = row["kdbench_bytes"] / reference_bytes if reference_bytes > 0 else None
        memory = row["memory_ratio"]
        row["targets"] = ({f"time_ratio<={TARGET_RATIO}": row["time_ratio"] <= TARGET_RATIO,
                           f"memory_ratio<={TARGET_RATIO}": None if memory is None else memory <= TARGET_RATIO}
                          if by_key[row["key"]].targets else {})
    return rows


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def format_rows(rows: list[dict]) -> str:
    """The rows as a plain-text table (ratios are kdbench / reference), with the scaled rows' reasons
    and the GPU rows' bandwidth figures underneath."""
    from kdbench.table import text_table

    header = ["device", "method", "input", "shape", "scale", "agrees", "kdbench ms", "ref ms", "time x",
              "kdbench MiB", "ref MiB", "memory x", "targets"]
    table = []
    notes = []
    for row in rows:
        memory = row.get("memory_ratio")
        targets = row.get("targets") or {}
        verdict = ", ".join(f"{name} {'met' if ok else 'MISSED' if ok is not None else 'n/a'}"
                            for name, ok in targets.items())
        table.append([
            row.get("device", "cpu"), row["method"], row["input"], "x".join(map(str, row["shape"])),
            f"{row['scale']:g}" + ("*" if row.get("scale_reason") else ""),
            "yes" if row["agrees"] else "NO", f"{row['kdbench_s'] * 1e3:.2f}", f"{row['reference_s'] * 1e3:.2f}",
            f"{row['time_ratio']:.2f}", _mib(row.get("kdbench_bytes")), _mib(row.get("reference_bytes")),
            "n/a" if memory is None else f"{memory:.2f}", verdict or "-",
        ])
        if row.get("cwd_kernel"):
            notes.append(f"{row['method']} on {row['input']} (cpu): the {row['cwd_kernel']} CWD kernel")
        if row.get("scale_reason"):
            notes.append(f"* {row['method']} on {row['input']} at scale {row['scale']:g}: {row['scale_reason']}")
        if "bandwidth_fraction" in row:
            notes.append(f"{row['method']} on {row['input']} ({row['device']}): {row['bytes_moved'] / 2**20:.0f} "
                         f"MiB must move; at {row['bandwidth_GBps']:.0f} GB/s ({row['bandwidth_source']}) that is "
                         f"{row['bandwidth_bound_s'] * 1e3:.3f} ms: {row['bandwidth_fraction']:.0%} of the bound")
        if row.get("unstable_first_check"):
            first = row["unstable_first_check"]
            notes.append(f"{row['method']} on {row['input']} ({row['device']}): the first agreement check differed "
                         f"(value {first['value_rel_diff']:.1e}, gradient {first['grad_rel_diff']:.1e} relative), "
                         f"two repeats agreed: a one-off nondeterministic result, not a different formula")
        if not row["agrees"]:
            notes.append(f"{row['method']} on {row['input']}: DISAGREES (value {row['value_rel_diff']:.1e}, "
                         f"gradient {row['grad_rel_diff']:.1e} relative; tolerance {TOLERANCE:g})")
    lines = text_table(header, table, right=range(3, 12))
    return "\n".join(lines + ["(time x, memory x: kdbench / reference; memory: peak extra)"] + notes)
