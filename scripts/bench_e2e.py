"""The end-to-end contestants of scripts/bench.py: one quick-protocol row, shiftbench vs PyTorch.

The row is the quick preset reduced to one model: scratch, full fine-tune at the canvas centre with a
location map of the curve objects every `e2e_eval_every` steps, then the final map of the test objects.
shiftbench composes canvases inside its jitted programs; the PyTorch version composes them on the host,
one object per `__getitem__`, behind a DataLoader, as published code does.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax
import torch
import torch.nn.functional as F
import torch_twin
from flax import nnx

from shiftbench.evaluators import location_maps
from shiftbench.evaluators.predictor import Predictor
from shiftbench.training import loop


def jax_e2e(model, args, spec, train_data, curve, test, grid):
  """Each call trains a fresh copy of `model`; one optimiser for all calls, so the step compiles once."""
  tx, init = optax.adam(1e-3), nnx.state(model)

  def run(warmup=False):
    t = time.perf_counter()
    nnx.update(model, jax.tree.map(jnp.copy, init))  # training donates the param buffers
    maps = lambda m, objs: location_maps.predict_grid(Predictor(m, args.canvas), objs, grid, args.eval_batch)
    loop.train(
      model,
      tx,
      train_data,
      spec,
      loop.Placement("fixed", spec.center()),
      steps=2 if warmup else args.e2e_steps,
      batch_size=args.batch,
      seed=0,
      log_every=50,
      eval_every=args.e2e_eval_every,
      on_eval=lambda step, m: maps(m, curve.images),
      desc="e2e",
    )
    maps(model, test.images)
    return 1.0 / (time.perf_counter() - t)

  return run


def torch_e2e(make_net, args, data, grid, center):
  """Each call trains a fresh `make_net()` from host-composed canvases in DataLoaders."""
  (tr_x, tr_y), (cu_x, cu_y), (te_x, te_y) = data
  loader_kw = dict(num_workers=args.workers, persistent_workers=False)

  @torch.inference_mode()
  def location_map(net, images, labels):  # one host-composed DataLoader per location, as published code
    for loc in grid:
      ds = torch_twin.HostCanvasDataset(images, labels, args.canvas, tuple(loc))
      for x, _ in torch.utils.data.DataLoader(ds, batch_size=min(len(ds), args.eval_batch), **loader_kw):
        net(x.contiguous(memory_format=torch.channels_last)).argmax(-1)

  def run(warmup=False):
    t = time.perf_counter()
    steps = 2 if warmup else args.e2e_steps
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    ds = torch_twin.HostCanvasDataset(tr_x, tr_y, args.canvas, center)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, **loader_kw)
    location_map(net.eval(), cu_x, cu_y)
    done = 0
    while done < steps:
      for x, y in loader:
        net.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y).backward()
        opt.step()
        done += 1
        if done % args.e2e_eval_every == 0 or done == steps:
          location_map(net.eval(), cu_x, cu_y)
        if done == steps:
          break
    location_map(net.eval(), te_x, te_y)
    return 1.0 / (time.perf_counter() - t)

  return run
