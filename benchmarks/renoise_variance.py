"""Relative spread of the re-noising MI estimator against its number of network evaluations.

Ground truth: the jointly Gaussian world of minitune.toy.gaussian with exact ε-denoisers, DDPM's
linear schedule (T = 1000). For each setting the estimator is run on R independent replicates of
the same x (the conditional mode of p(x|y)); the table shows std over replicates / |its mean| in %,
for three proposals over noise levels: the default logistic density in log SNR (``importance``),
uniform in t (``uniform``, no importance sampling) and a proposal fitted to the denoiser by
:func:`minitune.mi.fit_proposal` on a pilot of 16 other images (``fitted``; draws x ~ p(x|y) for the
Gaussian, renders of other training prompts for the Shapes model), both forms, at 8–128
evaluations. The last column is the mean reported standard error divided by the measured spread at
64 evaluations (1.0 = honest). Issue goal: ≤ 5 % relative std at ≤ 64 evaluations.

A second, higher-dimensional Gaussian (d = 64, k = 8) shows how the floor set by the ε noise at a
fixed noise level falls as the information spreads over more dimensions (as in real images).

The third section measures the same on the shipped Shapes model (d = 3 × 32 × 32): ground-truth
renders of training prompts under their own prompt, R replicates each at 16 and 64 evaluations.

    python benchmarks/renoise_variance.py [--replicates 400] [--toy-images 2] [--toy-replicates 32]
"""

import argparse
import time

import torch
from diffusers import DDPMScheduler

from minitune import mi
from minitune.toy.gaussian import JointGaussian

EVALS = (8, 16, 32, 64, 128)
PILOT = 16  # images in the pilot of the fitted proposal


def spread_row(pair, x, ab, form, proposal, evals, batch_size) -> str:
    """Relative std (%) of the estimates over the replicates in x, per number of evaluations, and se/sd at 64."""
    row, calibration = [], float("nan")
    for n in evals:
        with torch.no_grad():
            est, se = mi.renoise_mi(pair, x, ab, n_samples=n, form=form, proposal=proposal,
                                    generator=torch.Generator().manual_seed(n), batch_size=batch_size)
        row.append(100 * float(est.std() / est.mean().abs()))
        calibration = float(se.mean() / est.std()) if n == 64 else calibration
    return "".join(f"{v:7.1f}%" for v in row) + f"{calibration:10.2f}   mean {float(est.mean()):.2f}"


def gaussian(replicates: int) -> None:
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    ab = mi.alphas_cumprod_of(DDPMScheduler(num_train_timesteps=1000))
    print(f"{'world':<16}{'form':<12}{'proposal':<12}" + "".join(f"{n:>8}" for n in EVALS) + f"{'se/sd@64':>10}")
    for d, k in ((4, 2), (64, 8)):
        G = JointGaussian.random(d=d, k=k, seed=0)
        y = G.mean_y + torch.randn(k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        x = G.cond_mean(y)[None]
        pilot = G.sample_x_given_y(y, PILOT, torch.Generator().manual_seed(2))
        print(f"d={d} k={k}: point-wise MI at x = {float(G.pointwise_mi(x, y)):.3f} nats, KL = {float(G.kl(y)):.3f} nats")
        for form in ("pointwise", "orthogonal"):
            fitted = mi.fit_proposal(G.eps_pair(y, ab), pilot, ab, generator=torch.Generator().manual_seed(3), form=form)
            for name, proposal in (("importance", "importance"), ("uniform", "uniform"), ("fitted", fitted)):
                print(f"{'':<16}{form:<12}{name:<12}" + spread_row(G.eps_pair(y, ab), x.repeat(replicates, 1), ab, form,
                                                                   proposal, EVALS, 8192))


def shapes(n_images: int, replicates: int) -> None:
    from minitune.denoisers import denoiser_for
    from minitune.toy import world
    from minitune.toy.pipeline import load_pipeline

    den = denoiser_for(load_pipeline())
    ab = mi.alphas_cumprod_of(den.scheduler)
    prompts = world.sample_prompts("train", n_images, seed=0)
    renders = world.render_batch(prompts, list(range(n_images)))
    pilot_prompts = world.sample_prompts("train", PILOT, seed=77)
    pilot_pair = den.eps_pair(den.encode(pilot_prompts))
    pilot = world.render_batch(pilot_prompts, list(range(PILOT)))
    with torch.no_grad():
        fitted = {form: mi.fit_proposal(pilot_pair, pilot, ab, generator=torch.Generator().manual_seed(3), form=form)
                  for form in ("pointwise", "orthogonal")}
    print(f"Shapes world, shipped model: {n_images} ground-truth renders of training prompts, {replicates} replicates; "
          f"fitted proposals from {PILOT} renders of other training prompts")
    print(f"{'prompt':<44}{'form':<12}{'proposal':<12}{16:>8}{64:>8}{'se/sd@64':>10}")
    for prompt, x in zip(prompts, renders):
        pair = den.eps_pair(den.encode([prompt] * replicates))
        for form in ("pointwise", "orthogonal"):
            for name, proposal in (("importance", "importance"), ("uniform", "uniform"), ("fitted", fitted[form])):
                print(f"{prompt:<44}{form:<12}{name:<12}" + spread_row(pair, x[None].repeat(replicates, 1, 1, 1), ab, form,
                                                                        proposal, (16, 64), 512))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=400, help="Gaussian replicates (0: skip that section)")
    parser.add_argument("--toy-images", type=int, default=2, help="Shapes-world renders (0: skip that section)")
    parser.add_argument("--toy-replicates", type=int, default=32)
    args = parser.parse_args()
    start = time.time()
    if args.replicates:
        gaussian(args.replicates)
    if args.toy_images:
        shapes(args.toy_images, args.toy_replicates)
    print(f"({time.time() - start:.0f} s)")
