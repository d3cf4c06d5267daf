"""Dataset building against the raw UNet work inside it, side by side in one run.

    python -m benchmarks.perf.build_throughput [--prompts 4] [--candidates 16] [--steps 25] [--cfg 4] [--repeats 2]
                                               [--results STEM]

The build (:func:`minitune.selection.build` on the shipped model: candidate pool with MI, oracle
scores, PNG files and records, then the MI top-k set) is timed while a forward hook records the
input shapes of every UNet call it makes. The raw side replays exactly those calls: the same
number of doubled-batch forwards on random inputs, with no text encoder, scheduler, oracle or I/O.
Prints images/s of both and raw time / build time (goal >= 0.9: everything around the network
costs at most a tenth). Runs alternate so that drifts in machine load hit both sides alike; on the
CPU the ratio of process CPU time is printed too, which other jobs sharing the machine do not skew,
and the goal is judged on it there (on an accelerator, on the wall-clock ratio). Exits with status 1
when the goal is missed.
"""

import tempfile
import time

import torch

from benchmarks import harness
from minitune import resolve_device
from minitune.selection import build
from minitune.toy.world import train_prompts

GOAL = 0.9  # raw UNet time / build time


def timed(device, fn, *args, **kwargs) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call (waiting for the accelerator, if any)."""
    if device.type != "cpu":
        torch.accelerator.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    if device.type != "cpu":
        torch.accelerator.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.no_grad()
def replay(unet, inputs):
    """The recorded UNet calls on pre-drawn random inputs."""
    for sample, t, hidden in inputs:
        unet(sample, t, encoder_hidden_states=hidden)


def random_inputs(calls, device) -> list:
    """Random inputs of the recorded (sample shape, hidden-state shape) of every UNet call, seed 0."""
    gen = torch.Generator(device).manual_seed(0)
    return [(torch.randn(s, generator=gen, device=device), torch.randint(1, 1000, (s[0],), generator=gen, device=device),
             torch.randn(h, generator=gen, device=device)) for s, h in calls]


def measure(pipe, prompts, args, device) -> tuple[list, list, list]:
    """The recorded UNet calls of a build, and (wall, CPU) seconds of each build and each raw replay, alternated."""
    kw = dict(guidance_scale=args.cfg, num_inference_steps=args.steps, batch_size=args.batch_size, progress=False)

    def timed_build(n_prompts=len(prompts), steps=args.steps):
        with tempfile.TemporaryDirectory() as d:
            return timed(device, build, pipe, prompts[:n_prompts], d, args.candidates, args.top_k,
                         **{**kw, "num_inference_steps": steps})

    calls = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, a, k: calls.append((a[0].shape, k["encoder_hidden_states"].shape)), with_kwargs=True)
    timed_build(1, 2)  # warm-up
    calls.clear()
    t_build = [timed_build()]
    hook.remove()
    inputs = random_inputs(calls, device)
    t_raw = []
    for r in range(args.repeats):
        t_raw.append(timed(device, replay, pipe.unet, inputs))
        if r + 1 < args.repeats:
            t_build.append(timed_build())
    return calls, t_build, t_raw


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None, threads=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=1)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    run = harness.start(ap, argv)
    args = run.args
    device = resolve_device(args.device)
    pipe = harness.load_model(device=device)
    prompts = train_prompts(args.prompts)
    calls, t_build, t_raw = measure(pipe, prompts, args, device)
    images = len(prompts) * args.candidates
    (b, b_cpu), (u, u_cpu) = (tuple(min(v) for v in zip(*t)) for t in (t_build, t_raw))
    batches = sorted({s[0] for s, _ in calls})
    out = harness.Report()
    out(f"{len(prompts)} prompts × {args.candidates} candidates = {images} images, CFG {args.cfg}, {args.steps} DDPM steps, "
        f"batch {args.batch_size}, top-{args.top_k} set; {args.threads} threads on {device}; best of {args.repeats}")
    out(f"UNet forwards in the build: {len(calls)} (doubled batches of {', '.join(map(str, batches))})")
    out(f"raw UNet forwards : {u:7.2f} s, {images / u:6.1f} images/s")
    out(f"dataset building  : {b:7.2f} s, {images / b:6.1f} images/s")
    out(f"ratio             : {u / b:.3f} (raw time / build time, goal >= {GOAL:g})")
    if device.type == "cpu":
        out(f"CPU time          : raw {u_cpu:.2f} s, build {b_cpu:.2f} s, ratio {u_cpu / b_cpu:.3f}")
    on_cpu = device.type == "cpu"  # judged on the CPU-time ratio there, which other jobs do not skew
    judged_on = "CPU-time" if on_cpu else "wall-clock"
    status = harness.goal(u_cpu / b_cpu if on_cpu else u / b, GOAL, f"{judged_on} ratio raw / build")
    run.write({"settings": harness.key(args, "prompts", "candidates", "top_k", "steps", "cfg", "batch_size", "repeats",
                                       "threads", device=str(device)),
               "unet_forwards": len(calls), "raw_s": u, "build_s": b, "raw_cpu_s": u_cpu, "build_cpu_s": b_cpu,
               "wall_ratio": u / b, "cpu_ratio": u_cpu / b_cpu, "judged_on": judged_on, "goal": GOAL,
               "goal_met": status == 0}, out.markdown(fenced=True))
    return status


if __name__ == "__main__":
    harness.main(main)
