"""The loss suite's references: each method's math in plain torch autograd, the obvious textbook
formulation (CWD: MMRazor's ``ChannelWiseDivergence``, docs/background.md#mmrazors-cwd), against which
``benchmarks.losses`` checks and times kdbench's modules."""

from __future__ import annotations

IGNORE = 255  # the label of pixels that count for nothing (mmseg's ignore_index)

def reference_cwd(preds_S, preds_T, tau: float, loss_weight: float):
    """MMRazor's ChannelWiseDivergence (docs/background.md#mmrazors-cwd)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = preds_S.shape
    s = preds_S.reshape(-1, h * w) / tau
    t = preds_T.detach().reshape(-1, h * w) / tau
    p_t = F.softmax(t, dim=1)
    return loss_weight * torch.sum(p_t * F.log_softmax(t, dim=1) - p_t * F.log_softmax(s, dim=1)) * tau**2 / (n * c)


def reference_norm_divergence(preds_S, preds_T, norm: str, divergence: str, tau: float, loss_weight: float):
    """The official ablation criterion's math (docs/background.md#the-normalisation-x-divergence-ablation),
    with log_softmax for the KL and every sample used by ``none``."""
    import torch.nn.functional as F

    n, c, h, w = preds_S.shape
    preds_T = preds_T.detach()
    if divergence == "mse":
        tau = 1.0
    if norm == "channel":
        s, t = preds_S.reshape(n * c, -1), preds_T.reshape(n * c, -1)
    elif norm == "spatial":
        s, t = preds_S, preds_T
    elif norm == "channel_mean":
        s, t = preds_S.mean(dim=(2, 3)), preds_T.mean(dim=(2, 3))
    else:
        s, t = preds_S.reshape(n, -1), preds_T.reshape(n, -1)
    if divergence == "kl":
        p_t = F.softmax(t / tau, dim=1)
        total = (p_t * (F.log_softmax(t / tau, dim=1) - F.log_softmax(s / tau, dim=1))).sum()
    else:
        if norm in ("channel", "spatial"):
            s, t = F.softmax(s, dim=1), F.softmax(t, dim=1)
        total = ((s - t) ** 2).sum()
    denominator = n * c if norm in ("channel", "channel_mean") else n * h * w
    return loss_weight * total * tau**2 / denominator


def reference_pi(preds_S, preds_T, tau: float, loss_weight: float):
    """Hinton's KD at every pixel with ``F.kl_div``, averaged over the N*H*W pixels."""
    import torch.nn.functional as F

    n, _, h, w = preds_S.shape
    kl = F.kl_div(F.log_softmax(preds_S / tau, dim=1), F.softmax(preds_T.detach() / tau, dim=1), reduction="sum")
    return loss_weight * kl * tau**2 / (n * h * w)


def reference_at(preds_S, preds_T, loss_weight: float):
    """Zagoruyko and Komodakis: at(x) = normalize(mean_c x**2), mean squared difference."""
    import torch.nn.functional as F

    def at(x):
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    return loss_weight * (at(preds_S) - at(preds_T.detach())).pow(2).mean()


def reference_fitnets(preds_S, preds_T, loss_weight: float):
    return loss_weight * ((preds_S - preds_T.detach()) ** 2).mean()


def reference_local(preds_S, preds_T, loss_weight: float):
    """The 3x3 neighbourhood of every pixel unfolded (replicate padding), |x_j - x_i| summed."""
    import torch.nn.functional as F

    def differences(x):
        n, c, h, w = x.shape
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate").reshape(n * c, 1, h + 2, w + 2)
        neighbourhood = F.unfold(padded, kernel_size=3).view(n, c, 9, h, w)  # the centre gives 0
        return (neighbourhood - x.unsqueeze(2)).abs().sum(dim=2)

    return loss_weight * ((differences(preds_S) - differences(preds_T.detach())) ** 2).mean()


def reference_pa(preds_S, preds_T, loss_weight: float):
    """SKD's pair-wise term: 2x2 max-pooled nodes, L2-normalised over channels (the SKD code's
    ``x / (norm + 1e-8)``), affinity ``F^T F``, squared difference / (HW)^2 / N."""
    import torch
    import torch.nn.functional as F

    def affinity(x):
        x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
        feat = x.reshape(x.shape[0], x.shape[1], -1)
        feat = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-8)
        return torch.bmm(feat.transpose(1, 2), feat)

    s_S, s_T = affinity(preds_S), affinity(preds_T.detach())
    n, hw = s_S.shape[:2]
    return loss_weight * ((s_T - s_S) ** 2).sum() / (hw * hw) / n


def reference_ifvd(preds_S, preds_T, labels, loss_weight: float):
    """IFVD's per-class loop: each class's masked mean is its prototype, every pixel's cosine to
    its own class's prototype, squared difference averaged over labelled pixels."""
    import torch
    import torch.nn.functional as F

    def cosine_map(feat):
        out = torch.zeros(feat.shape[0], *feat.shape[2:], dtype=feat.dtype, device=feat.device)
        for k in labels[labels != IGNORE].unique().tolist():
            mask = (labels == k).unsqueeze(1).to(feat.dtype)  # (N, 1, H, W)
            proto = (feat * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp_min(1.0)  # (N, C)
            cosine = F.cosine_similarity(feat, proto[:, :, None, None].expand_as(feat), dim=1)
            out = out + cosine * mask[:, 0]
        return out

    valid = labels != IGNORE
    with torch.no_grad():
        map_T = cosine_map(preds_T.detach())
    return loss_weight * ((cosine_map(preds_S) - map_T) ** 2)[valid].mean()


def _critic_layers(critic):
    """(weight, bias, stride, padding, leaky) of each conv of HO's critic, in order."""
    import torch.nn as nn

    convs = [m for m in critic if isinstance(m, nn.Conv2d)]
    return [(conv, i < len(convs) - 1) for i, conv in enumerate(convs)]


def _reference_critic(critic, x, detached: bool):
    """HO's critic as plain functional convolutions (softmax input, strided 3x3 convs, LeakyReLU
    0.2, one score per sample as the mean of the last map)."""
    import torch.nn.functional as F

    for conv, leaky in _critic_layers(critic):
        weight, bias = (conv.weight.detach(), conv.bias.detach()) if detached else (conv.weight, conv.bias)
        x = F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)
        if leaky:
            x = F.leaky_relu(x, 0.2)
    return x.mean(dim=(1, 2, 3))


def reference_ho_student(critic, preds_S, loss_weight: float):
    """The student's adversarial term: -weight * mean_n D(softmax(S)); no gradient to D."""
    import torch

    return -loss_weight * _reference_critic(critic, torch.softmax(preds_S, dim=1), detached=True).mean()


def reference_ho_critic_step(critic, optimizer, preds_S, preds_T, d_weight: float, gp_weight: float):
    """One WGAN-GP critic update (Gulrajani et al.): D(fake) - D(real) + gp_weight * GP, times
    d_weight, one Adam step. Returns the critic loss."""
    import torch

    fake, real = torch.softmax(preds_S.detach(), dim=1), torch.softmax(preds_T.detach(), dim=1)
    alpha = torch.rand(real.shape[0], 1, 1, 1, dtype=real.dtype, device=real.device)
    interpolated = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = _reference_critic(critic, interpolated, detached=False)
    (grad,) = torch.autograd.grad(scores, interpolated, grad_outputs=torch.ones_like(scores), create_graph=True)
    penalty = ((grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
    wasserstein = _reference_critic(critic, fake, False).mean() - _reference_critic(critic, real, False).mean()
    loss = d_weight * (wasserstein + gp_weight * penalty)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def reference_fbkd(layers: dict, preds_S, preds_T, weights: tuple, spatial_t: float, loss_weight: float):
    """FBKD's four terms (Zhang & Ma, ICLR 2021, as MMRazor computes them) written out: the spatial
    attention as exp / sum, the norms as square roots of sums of squares. ``layers``: the student's
    adapters and both non-local blocks (copies of kdbench's, so both start from the same weights)."""
    import torch

    def attention(x):
        n, _, h, w = x.shape
        energy = (x.abs().sum(dim=1) / x.shape[1]).reshape(n, h * w) / spatial_t
        weights_ = torch.exp(energy - energy.max(dim=1, keepdim=True).values)
        return (weights_ / weights_.sum(dim=1, keepdim=True) * (h * w)).reshape(n, 1, h, w)

    def norm(x):
        return torch.sqrt((x ** 2).sum())

    t = preds_T.detach()
    mask = ((attention(t) + attention(preds_S)) / 2).detach()
    masked = torch.sqrt(((t - layers["feature"](preds_S)) ** 2 * mask).sum())
    channel = norm(t.mean(dim=(2, 3)) - layers["channel"](preds_S.mean(dim=(2, 3))))
    spatial = norm(t.mean(dim=1, keepdim=True) - layers["spatial"](preds_S.mean(dim=1, keepdim=True)))
    relation = norm(layers["teacher_non_local"](t) - layers["relation"](layers["non_local"](preds_S)))
    w_mask, w_channel, w_spatial, w_relation = weights
    return loss_weight * (w_mask * masked + w_channel * channel + w_spatial * spatial + w_relation * relation)


def reference_pkd(preds_S, preds_T, loss_weight: float):
    """PKD: each channel standardised over (N, H, W) (unbiased std + 1e-6) as a (C, N*H*W) matrix,
    half the mean squared difference."""
    import torch.nn.functional as F

    def standardised(x):
        rows = x.transpose(0, 1).reshape(x.shape[1], -1)
        return (rows - rows.mean(dim=1, keepdim=True)) / (rows.std(dim=1, keepdim=True) + 1e-6)

    return loss_weight * F.mse_loss(standardised(preds_S), standardised(preds_T.detach())) / 2


def reference_mgd(layers: dict, preds_S, preds_T, alpha_mgd: float, lambda_mgd: float, loss_weight: float):
    """MGD: the student aligned (when ``layers`` has ``align``), its positions zeroed where a uniform
    draw (on the CPU, per (N, 1, H, W)) exceeds 1 - lambda, the generation block, and the squared
    error summed per image. ``layers``: copies of kdbench's, so both start from the same weights."""
    import torch

    x = layers["align"](preds_S) if "align" in layers else preds_S
    n, _, h, w = x.shape
    draw = torch.rand((n, 1, h, w)).to(x.device)
    mask = torch.where(draw > 1 - lambda_mgd, torch.zeros_like(draw), torch.ones_like(draw))
    generated = layers["generation"](x * mask)
    return loss_weight * alpha_mgd * ((generated - preds_T.detach()) ** 2).sum() / n


def reference_dist(preds_S, preds_T, tau: float, inter_loss_weight: float, intra_loss_weight: float, intra: str,
                   loss_weight: float):
    """DIST: softmax over classes, 1 - mean Pearson correlation over the classes at each position
    (inter) and of each class over the batch's pixels (intra ``pixels``) or over the images at
    each position (intra ``batch``), times tau^2."""
    import torch

    def relation(a, b, dims):
        a = a - a.mean(dim=dims, keepdim=True)
        b = b - b.mean(dim=dims, keepdim=True)
        r = (a * b).sum(dim=dims) / ((a * a).sum(dim=dims).sqrt() * (b * b).sum(dim=dims).sqrt() + 1e-8)
        return 1 - r.mean()

    y_S = torch.softmax(preds_S / tau, dim=1)
    y_T = torch.softmax(preds_T.detach() / tau, dim=1)
    intra_dims = (0, 2, 3) if intra == "pixels" else (0,)
    total = inter_loss_weight * relation(y_S, y_T, (1,)) + intra_loss_weight * relation(y_S, y_T, intra_dims)
    return loss_weight * tau**2 * total
def reference_cirkd_pair(preds_S, preds_T, tau: float, pooling: bool, loss_weight: float):
    """CIRKD's mini-batch term written out pair by pair: normalised maps, each ordered pair's (HW x HW)
    similarity maps, ``F.kl_div`` with ``batchmean`` on their row softmaxes, the mean over B^2 pairs."""
    import torch.nn.functional as F

    t = preds_T.detach()
    if pooling:
        preds_S, t = F.avg_pool2d(preds_S, 2, 2, ceil_mode=True), F.avg_pool2d(t, 2, 2, ceil_mode=True)
    s, t = F.normalize(preds_S, dim=1).flatten(2), F.normalize(t, dim=1).flatten(2)  # (B, C, HW)
    b = s.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            log_p_s = F.log_softmax(s[i].T @ s[j] / tau, dim=1)
            p_t = F.softmax(t[i].T @ t[j] / tau, dim=1)
            total = total + F.kl_div(log_p_s, p_t, reduction="batchmean")
    return loss_weight * total / (b * b)


def reference_cirkd_memory(layers: dict, preds_S, preds_T, labels, settings: dict):
    """CIRKD's memory terms written out: ``layers`` holds the projector and the four queue tensors
    (copies, updated here in place), ``settings`` the loss's values. The queues are updated image by
    image and class by class, then each term's entries drawn and the KL of the (pixels x entries)
    logits taken with ``F.kl_div``; the random draws come in the order kdbench's module makes them."""
    import torch
    import torch.nn.functional as F

    ignore, kt = settings["ignore_index"], settings["contrast_kd_temperature"]
    s = F.normalize(layers["project_head"](preds_S), dim=1)
    t = F.normalize(preds_T.detach(), dim=1)
    labels = F.interpolate(labels[:, None].float(), s.shape[2:], mode="nearest")[:, 0].long()
    keep = labels.reshape(-1) != ignore
    rows_S = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1])[keep]
    rows_T = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])[keep]
    pixels, pixel_ptr = layers["teacher_pixel_queue"], layers["pixel_queue_ptr"]
    regions, region_ptr = layers["teacher_segment_queue"], layers["segment_queue_ptr"]
    for image in range(t.shape[0]):
        feat, label = t[image].reshape(t.shape[1], -1), labels[image].reshape(-1)
        for k in [int(c) for c in label.unique() if int(c) != ignore]:
            where = (label == k).nonzero()[:, 0]
            regions[k, int(region_ptr[k])] = F.normalize(feat[:, where].mean(dim=1), dim=0)
            region_ptr[k] = (int(region_ptr[k]) + 1) % regions.shape[1]
            picked = F.normalize(feat[:, torch.randperm(where.numel())[:16].to(feat.device)].T, dim=1)
            ptr, size = int(pixel_ptr[k]), picked.shape[0]
            if ptr + size >= pixels.shape[1]:
                pixels[k, pixels.shape[1] - size:] = picked
                pixel_ptr[k] = 0
            else:
                pixels[k, ptr:ptr + size] = picked
                pixel_ptr[k] = ptr + size
    total = 0.0
    for queue, contrast, weight in ((pixels, settings["pixel_contrast_size"], settings["lambda_memory_pixel"]),
                                    (regions, settings["region_contrast_size"], settings["lambda_memory_region"])):
        entries = queue[:, torch.randperm(queue.shape[1])[:contrast].to(queue.device)].reshape(-1, queue.shape[2])
        logits_S = rows_S @ entries.T / settings["contrast_temperature"]
        logits_T = rows_T @ entries.T / settings["contrast_temperature"]
        kl = F.kl_div(F.log_softmax(logits_S / kt, dim=1), F.softmax(logits_T / kt, dim=1), reduction="batchmean")
        total = total + weight * kl * kt * kt
    return settings["loss_weight"] * total


def reference_afdcd(layers: dict, preds_S, preds_T, settings: dict):
    """Af-DCD's two terms written out: the mask drawn as kdbench draws it, the reconstruction's sum of
    squares, and the omni-contrastive cross-entropy with each token's positive and negatives gathered
    into one logits matrix (positive first)."""
    import torch
    import torch.nn.functional as F

    t = preds_T.detach()
    student = layers["align"](preds_S)
    b, c, h, w = t.shape
    mask = (torch.rand((b, 1, h, w)) <= 1 - settings["mask_ratio"]).to(student.device, student.dtype)
    generated = layers["projetor"](student * mask)
    reconstruction = ((generated - t) ** 2).sum() / b
    pool, (ph, pw), groups = settings["pool_size"], settings["patch_size"], settings["M_ocd"]
    x, y = (F.max_pool2d(generated, pool), F.max_pool2d(t, pool)) if pool else (generated, t)
    hp, wp = x.shape[2:]

    def tokens(z):
        z = z.reshape(b, c, hp // ph, ph, wp // pw, pw).permute(0, 2, 4, 3, 5, 1)  # (B, h', w', ph, pw, C)
        return z.reshape(-1, ph * pw * groups, c // groups)  # a token: one position, one channel group

    sim = -torch.cdist(tokens(x), tokens(y), p=1).double()  # the cross-entropy in float64, as kdbench's
    length = sim.shape[-1]
    group = torch.arange(length, device=sim.device) % groups
    negatives = sim[:, group[:, None] != group[None, :]].reshape(sim.shape[0], length, -1)
    logits = torch.cat([sim.diagonal(dim1=1, dim2=2)[..., None], negatives], dim=2) / settings["tau_ocd"]
    logits = logits.reshape(-1, logits.shape[-1])
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    contrast = (F.cross_entropy(logits, target, reduction="sum") / (hp * wp)).to(t.dtype) / b
    return settings["loss_weight"] * (settings["lambda_fd"] * reconstruction + settings["lambda_ctr"] * contrast)


def reference_fgd(layers: dict, preds_S, preds_T, boxes, image_shapes, settings: dict):
    """FGD (Yang et al., CVPR 2022): the masks drawn box by box into the map, each focal term as the
    summed squared difference of the two maps each multiplied by the square roots of the teacher's
    spatial and channel attention and of the mask, the attention-mask term, and the GcBlock relation
    term, each summed and divided by N. ``layers``: copies of kdbench's (``align`` where the channels
    differ, ``conv_mask_s``/``_t``, ``channel_add_conv_s``/``_t``), so both start from the same weights."""
    import math

    import torch
    import torch.nn.functional as F

    temp = settings["temp"]
    s = layers["align"](preds_S) if "align" in layers else preds_S
    t = preds_T.detach()
    n, c, h, w = s.shape

    def attention(x):
        a = x.abs()
        spatial = F.softmax(a.mean(dim=1).reshape(n, -1) / temp, dim=1).reshape(n, 1, h, w) * (h * w)
        channel = F.softmax(a.mean(dim=3).mean(dim=2) / temp, dim=1).reshape(n, c, 1, 1) * c
        return spatial, channel

    fg = torch.zeros(n, 1, h, w, dtype=s.dtype, device=s.device)
    bg = torch.ones(n, 1, h, w, dtype=s.dtype, device=s.device)
    for i in range(n):
        image_h, image_w = image_shapes[i]
        for x1, y1, x2, y2 in boxes[i].tolist():
            left, right = math.floor(x1 / image_w * w), math.ceil(x2 / image_w * w)
            top, bottom = math.floor(y1 / image_h * h), math.ceil(y2 / image_h * h)
            area = float(torch.tensor(1.0) / (bottom + 1 - top) / (right + 1 - left))  # float32, as FGD's
            region = fg[i, 0, top:bottom + 1, left:right + 1]
            fg[i, 0, top:bottom + 1, left:right + 1] = torch.clamp(region, min=area)
        bg[i] = (fg[i] == 0).to(s.dtype)
        if bg[i].sum() > 0:
            bg[i] = bg[i] / bg[i].sum()
    spatial_t, channel_t = attention(t)
    spatial_s, channel_s = attention(s)
    scale = torch.sqrt(spatial_t) * torch.sqrt(channel_t)
    focal = [((s * scale * torch.sqrt(m) - t * scale * torch.sqrt(m)) ** 2).sum() / n for m in (fg, bg)]
    mask = ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n

    def gc_block(x, side):
        weights = F.softmax(layers[f"conv_mask_{side}"](x).reshape(n, 1, h * w), dim=2)
        context = torch.matmul(x.reshape(n, 1, c, h * w), weights.reshape(n, 1, h * w, 1)).reshape(n, c, 1, 1)
        return x + layers[f"channel_add_conv_{side}"](context)

    relation = ((gc_block(s, "s") - gc_block(t, "t")) ** 2).sum() / n
    total = (settings["alpha_fgd"] * focal[0] + settings["beta_fgd"] * focal[1] + settings["gamma_fgd"] * mask
             + settings["lambda_fgd"] * relation)
    return settings["loss_weight"] * total
