"""The pipeline's mechanics (strategies `mp` and `hybrid` with pp > 1): stages and schedules.

The blocks are split over the "pp" mesh dimension in order (`flops.stage_layers`).
schedule=naive: the plain split. Stage i runs its blocks on the whole micro-step batch,
    sends the activations (B, T, C) to stage i+1 with torch.distributed send/recv, and in
    backward receives the gradient of its output and sends back the gradient of its input.
    Only one stage works at a time: the bubble is (p-1)/p.
schedule=gpipe | 1f1b | interleaved: the batch is cut into `microbatches` micro-batches and
    run by torch.distributed.pipelining (ScheduleGPipe: all forwards then all backwards;
    Schedule1F1B: one forward one backward, at most p micro-batches alive; interleaved
    1F1B: each rank holds `stages_per_rank` chunks, rank r the chunks r, r+p, ...).

The output layer is tied to the token embedding, which lives on the first stage (input)
and the last (output). Both copies start equal (same per-name init) and their gradients
are summed between the two ranks after backward (as Megatron-LM does), so they stay equal
after every optimizer step and the model is the same one `single` trains.
"""
from __future__ import annotations


import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from bench.config import Schedule
from bench.flops import stage_layers
from bench.model import GPT, stage_loss
from bench.parallel.rank import Ctx, Parallel
from bench.spec import RunSpec


def build_stages(spec: RunSpec, ctx: Ctx) -> list[GPT]:
    """The model chunks this pipeline rank holds (one, or `stages_per_rank` interleaved), on
    the meta device: parallelize.py shards them, then gives them storage and weights."""
    pp, chunks = spec.layout.pp, spec.layout.pipeline.stages_per_rank
    n = pp * chunks
    ids = range(ctx.mesh["pp"].get_local_rank(), n, pp)  # rank r holds chunks r, r + p, r + 2p, ...
    layers = stage_layers(spec.shape.n_layer, n)
    with torch.device("meta"):
        return [GPT(spec.shape, layers=layers[i], first=i == 0, last=i == n - 1) for i in ids]


def _tie_group(pp_mesh: DeviceMesh, full_mesh: DeviceMesh) -> dist.ProcessGroup | None:
    """The group {first stage, last stage} of this rank's pipeline; every rank must create
    every such group, in the same order, even the groups it is not in."""
    if pp_mesh.size() == 1:
        return None
    rows = full_mesh.mesh.reshape(-1, pp_mesh.size()).tolist()  # one row per pipeline (dp replica)
    mine = None
    for row in rows:
        key = (row[0], row[-1])
        if key not in _TIE_GROUPS:  # a standing job (bench/session.py) measures many pipelines: one group each pair
            _TIE_GROUPS[key] = dist.new_group(list(key))
        if dist.get_rank() in key:
            mine = _TIE_GROUPS[key]
    return mine


# (first, last) stage ranks -> their group, for the life of the process group (every rank
# creates the same groups in the same order, so every rank's cache agrees)
_TIE_GROUPS: dict[tuple[int, int], dist.ProcessGroup] = {}


def schedule(stages: list[GPT], spec: RunSpec, ctx: Ctx) -> Parallel:
    """The step of a pipeline rank over its (prepared, possibly FSDP-wrapped) stage modules:
    the schedule, then the tied embedding's gradients summed between first and last stage."""
    pp_mesh = ctx.mesh["pp"]
    tied = _tie_group(pp_mesh, ctx.mesh)
    first, last = stages[0].first, stages[-1].last
    if spec.layout.pipeline.schedule is Schedule.naive:
        fb = _naive(stages[0], spec, ctx, pp_mesh)
    else:
        fb = _scheduled(stages, spec, ctx, pp_mesh)

    def forward_backward(batch: torch.Tensor) -> torch.Tensor | None:
        loss = fb(batch)
        if tied is not None:  # sum the tied embedding's gradients of the first and last stage
            holder = stages[0] if first else stages[-1]
            g = holder.wte.weight.grad
            dist.all_reduce(g.to_local() if hasattr(g, "to_local") else g, group=tied)
        return loss

    return Parallel(stages, forward_backward, has_loss=last)


def _naive(model: GPT, spec: RunSpec, ctx: Ctx, pp_mesh: DeviceMesh):
    ranks = pp_mesh.mesh.tolist()  # global ranks of this pipeline, stage order
    stage = pp_mesh.get_local_rank()
    first, last = model.first, model.last
    prev_rank = ranks[stage - 1] if not first else None
    next_rank = ranks[stage + 1] if not last else None
    B, T, C = spec.batch_size, spec.seq_len, spec.shape.n_embd

    def forward_backward(batch: torch.Tensor) -> torch.Tensor | None:
        accum = batch.shape[0]
        total = torch.zeros((), device=ctx.device)
        for i in range(accum):
            x, y = batch[i, :, :-1], batch[i, :, 1:]
            if not first:  # activations from the previous stage; the residual stream is fp32
                x = torch.empty(B, T, C, device=ctx.device)
                dist.recv(x, src=prev_rank)
                x.requires_grad_()
            with ctx.autocast():
                out = model(x, y) if last else model(x)  # the last stage: the loss, its head inside the forward
            if last:
                loss = out
                ctx.backward(loss / accum)
                total += loss.detach()
            else:
                dist.send(out.detach().float().contiguous(), dst=next_rank)
                grad = torch.empty(B, T, C, device=ctx.device)
                dist.recv(grad, src=next_rank)
                out.backward(grad.to(out.dtype))
            if not first:
                dist.send(x.grad.contiguous(), dst=prev_rank)
        return total / accum if last else None

    return forward_backward


def _scheduled(stages: list[GPT], spec: RunSpec, ctx: Ctx, pp_mesh: DeviceMesh):
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B
    pipe_cfg, pp = spec.layout.pipeline, spec.layout.pp
    n = pp * pipe_cfg.stages_per_rank
    group = pp_mesh.get_group()
    pipe = [PipelineStage(m, i, n, ctx.device, group=group)
            for m, i in zip(stages, range(pp_mesh.get_local_rank(), n, pp))]
    # each micro-batch's loss is a mean over its tokens; dividing it by microbatches x
    # grad_accum gives the gradient of the mean loss. (Not the schedule's scale_grads: it
    # rescales the whole .grad at the end of every step(), which would shrink the
    # gradients of earlier micro-steps again under gradient accumulation.)
    m = pipe_cfg.microbatches
    scale = m * spec.grad_accum
    lf = lambda out, y: stage_loss(stages[-1], out, y) / scale  # noqa: E731
    if pipe_cfg.schedule is Schedule["interleaved"]:
        runner = ScheduleInterleaved1F1B(pipe, m, loss_fn=lf, scale_grads=False)
    else:
        cls = ScheduleGPipe if pipe_cfg.schedule is Schedule.gpipe else Schedule1F1B
        runner = cls(pipe[0], m, loss_fn=lf, scale_grads=False)
    first, last = stages[0].first, stages[-1].last

    def forward_backward(batch: torch.Tensor) -> torch.Tensor | None:
        total = torch.zeros((), device=ctx.device)
        for i in range(batch.shape[0]):
            # contiguous: the first stage checks its input's strides against what it inferred (a
            # (B, T) tensor), and a slice of the (B, T + 1) rows has stride T + 1 (seen on CUDA)
            x, y = batch[i, :, :-1].contiguous(), batch[i, :, 1:].contiguous()
            losses: list[torch.Tensor] = []
            args = (x,) if first else ()
            kwargs = {"target": y, "losses": losses} if last else {}
            with ctx.autocast():  # return_outputs=False: no merged (B, T, V) logits to keep
                runner.step(*args, return_outputs=False, **kwargs)
            if last:  # each is one micro-batch's loss / (microbatches x grad_accum)
                total += torch.stack([l.detach() for l in losses]).sum()
        return total if last else None

    return forward_backward
