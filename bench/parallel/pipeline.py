"""mp: layer-wise model parallel (pipeline). The blocks are split over the ranks in order.

schedule=naive: the plain split of the seed design. Stage i runs its blocks on the whole
    micro-step batch, sends the activations (B, T, C) to stage i+1 with torch.distributed
    send/recv, and in backward receives the gradient of its output and sends back the
    gradient of its input. Only one stage works at a time: the bubble is (p-1)/p.
schedule=gpipe: the batch is cut into `microbatches` micro-batches and run through
    torch.distributed.pipelining's ScheduleGPipe (all forwards, then all backwards).

The output layer is tied to the token embedding, which lives on the first stage (input)
and the last (output). Both copies start equal (same per-name init) and their gradients
are summed between the two stages after backward (as Megatron-LM does), so they stay equal
after every optimizer step and the model is the same one `single` trains.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from bench.model import GPT, build_model, loss_fn
from bench.parallel import Ctx, Parallel
from bench.plan import RunSpec, stage_layers


def apply(spec: RunSpec, ctx: Ctx) -> Parallel:
    pp, stage = spec.pp, ctx.rank  # pure pipeline: rank i is stage i
    first, last = stage == 0, stage == pp - 1
    model = build_model(spec.shape, ctx.device, spec.seed, layers=stage_layers(spec.shape.n_layer, pp)[stage],
                        first=first, last=last)
    # every rank must take part in creating a group, even those not in it
    tied = dist.new_group([0, pp - 1]) if pp > 1 else None
    if spec.schedule == "naive":
        fb = _naive(model, spec, ctx, stage)
    else:
        fb = _gpipe(model, spec, ctx, stage)

    def forward_backward(batch: torch.Tensor) -> torch.Tensor | None:
        loss = fb(batch)
        if tied is not None and (first or last):
            dist.all_reduce(model.wte.weight.grad, group=tied)  # sum the tied embedding's grads
        return loss

    return Parallel([model], forward_backward, has_loss=last)


def _naive(model: GPT, spec: RunSpec, ctx: Ctx, stage: int):
    pp = spec.pp
    first, last = stage == 0, stage == pp - 1
    B, T, C = spec.batch_size, spec.seq_len, spec.shape.n_embd

    def forward_backward(batch: torch.Tensor) -> torch.Tensor | None:
        accum = batch.shape[0]
        total = torch.zeros((), device=ctx.device)
        for i in range(accum):
            x, y = batch[i, :, :-1], batch[i, :, 1:]
            if not first:  # activations from the previous stage; the residual stream is fp32
                x = torch.empty(B, T, C, device=ctx.device)
                dist.recv(x, src=stage - 1)
                x.requires_grad_()
            with ctx.autocast():
                out = model(x)
            if last:
                loss = loss_fn(out, y)
                ctx.backward(loss / accum)
                total += loss.detach()
            else:
                dist.send(out.detach().float().contiguous(), dst=stage + 1)
                grad = torch.empty(B, T, C, device=ctx.device)
                dist.recv(grad, src=stage + 1)
                out.backward(grad.to(out.dtype))
            if not first:
                dist.send(x.grad.contiguous(), dst=stage - 1)
        return total / accum if last else None

    return forward_backward


def _gpipe(model: GPT, spec: RunSpec, ctx: Ctx, stage: int):
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe
    pp = spec.pp
    first, last = stage == 0, stage == pp - 1
    pstage = PipelineStage(model, stage, pp, ctx.device)
    accum = spec.grad_accum
    # each micro-batch's loss is a mean over its tokens; the schedule scales gradients by
    # 1/microbatches and we by 1/grad_accum, giving the gradient of the mean loss.
    schedule = ScheduleGPipe(pstage, spec.microbatches, loss_fn=lambda out, y: loss_fn(out, y) / accum)

    def forward_backward(batch: torch.Tensor) -> torch.Tensor | None:
        total = torch.zeros((), device=ctx.device)
        for i in range(batch.shape[0]):
            x, y = batch[i, :, :-1], batch[i, :, 1:]
            losses: list[torch.Tensor] = []
            with ctx.autocast():
                if first and last:
                    schedule.step(x, target=y, losses=losses)
                elif first:
                    schedule.step(x)
                elif last:
                    schedule.step(target=y, losses=losses)
                else:
                    schedule.step()
            if last:  # each is loss/accum of one micro-batch: mean over micro-batches
                total += torch.stack([l.detach() for l in losses]).mean()
        return total if last else None

    return forward_backward
