"""CPU throughput of the shipped UNet: what channels_last, bf16 autocast, torch.compile, threads and batch size buy.

    python benchmarks/unet_throughput.py [--batches 16 64 128] [--repeats 5] [--no-compile] [--results STEM]

Times the guided forward that sampling calls once per step (the conditional and unconditional
predictions of B latents in one UNet call on 2B rows, ``Denoiser.eps_pair``) under each setting, in one
run and on the same inputs, and reports:

- candidates/min at 10 sampling steps (the full preset's sampler), and the ratio to fp32 at batch 64;
- the achieved GFLOP/s (FLOPs of one forward counted by ``torch.utils.flop_counter``) against a
  dense fp32 matrix product on the same threads, which stands for what this CPU can do;
- the largest relative difference of ε̂ from the fp32 reference: a setting is kept only within
  ``--tolerance`` (default 1e-3 relative, in the L2 norm per image).

A setting that fails (for example bf16 on a CPU without bf16 support) is reported, not hidden.
"""

import argparse
import sys
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from minitune.denoisers import denoiser_for
from minitune.results import write_result
from minitune.sweep import markdown_table
from minitune.toy import world
from minitune.toy.pipeline import load_pipeline

STEPS = 10  # sampling steps of the full preset (dpmpp-sde)


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a dense n×n matrix product: the reference for what the CPU can do."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def bf16_native() -> bool:
    """Whether the CPU computes in bf16 natively (AVX512-BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def forward(setting: dict, batch: int, seed: int = 0):
    """A callable that runs one guided forward of `batch` latents under `setting`, and its inputs' output."""
    torch.set_num_threads(setting["threads"])
    pipe = load_pipeline("toy")
    if setting.get("channels_last"):
        pipe.unet.to(memory_format=torch.channels_last)
    if setting.get("compile"):
        pipe.unet = torch.compile(pipe.unet)
    den = denoiser_for(pipe)
    prompts = world.sample_prompts("train", batch, seed=seed)
    pair = den.eps_pair(den.encode(prompts))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((batch, *den.latent_shape), generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if setting.get("bf16") else nullcontext()

    def run():
        with autocast:
            c, u = pair(z, t)
        return torch.cat([c, u]).float()

    return run


def measure(setting: dict, batch: int, repeats: int, reference: torch.Tensor | None) -> tuple[dict, torch.Tensor | None]:
    """The row of one setting and batch, and its output (None if the setting failed)."""
    try:
        run = forward(setting, batch)
        t0 = time.perf_counter()
        out = run()  # warm-up (and, with torch.compile, the compilation)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(repeats):
            run()
        per_forward = (time.perf_counter() - t0) / repeats
    except Exception as e:  # reported as a row: the setting does not work here
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}, None
    with FlopCounterMode(display=False) as counter:
        forward({**setting, "compile": False}, batch)()
    row = {"seconds_per_forward": per_forward, "first_call_s": first,
           "candidates_per_min": 60 * batch / (per_forward * STEPS), "gflops": counter.get_total_flops() / per_forward / 1e9}
    reference = out if reference is None else reference
    row["max_rel_diff"] = float(((out - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)).max())
    return row, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out (its first call compiles)")
    ap.add_argument("--results", help="also write <RESULTS>.json and .md (e.g. book/results/unet_throughput)")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    t_start = time.time()
    base = {"name": "fp32", "threads": threads}
    settings = [base, {"name": "fp32, 1 thread", "threads": 1},
                {"name": "channels_last", "threads": threads, "channels_last": True},
                {"name": "bf16 autocast", "threads": threads, "bf16": True}]
    if not bf16_native():  # emulated bf16 is many times slower than fp32: report it, do not time it
        settings = [s for s in settings if not s.get("bf16")]
        skipped = [f"bf16 autocast: not timed, this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 "
                   "instructions (AVX512-BF16 or AMX)"]
    else:
        skipped = []
    if not args.no_compile:
        settings.append({"name": "torch.compile", "threads": threads, "compile": True})
    runs = [(base, b) for b in sorted({*args.batches, 64})] + [(s, 64) for s in settings[1:]]  # 64: the reference
    references, rows = {}, []
    for setting, batch in runs:  # the fp32 runs come first and are their batch's reference
        row, out = measure(setting, batch, args.repeats, references.get(batch))
        references.setdefault(batch, out)
        rows.append({"setting": setting["name"], "batch": batch, **row})
        print(rows[-1], flush=True)
    ref = next(r for r in rows if r["setting"] == "fp32" and r["batch"] == 64)
    peak = {n: matmul_gflops(n) for n in {s["threads"] for s in settings}}
    for r in rows:
        if "error" not in r:
            r["speed_ratio"] = r["candidates_per_min"] / ref["candidates_per_min"]
            n = 1 if r["setting"].endswith("1 thread") else threads
            r["share_of_matmul"] = r["gflops"] / peak[n]
            r["within_tolerance"] = r["max_rel_diff"] <= args.tolerance
    table = markdown_table([
        {"setting": r["setting"], "batch": r["batch"],
         **({"candidates/min at 10 steps": f"{r['candidates_per_min']:.0f}", "× fp32 batch 64": f"{r['speed_ratio']:.2f}",
             "GFLOP/s": f"{r['gflops']:.1f}", "of the matmul's": f"{100 * r['share_of_matmul']:.0f} %",
             "max relative Δε̂": f"{r['max_rel_diff']:.1e}", "kept": "yes" if r["within_tolerance"] else "no",
             "first call s": f"{r['first_call_s']:.1f}"} if "error" not in r else {"candidates/min at 10 steps": r["error"]})}
        for r in rows])
    md = (f"The shipped UNet's guided forward (2B rows per call) on {threads} CPU threads; fp32 dense matmul: "
          + ", ".join(f"{peak[n]:.0f} GFLOP/s on {n} thread(s)" for n in sorted(peak))
          + f". A setting is kept when its ε̂ stays within {args.tolerance:g} (relative L2 per image) of fp32.\n\n{table}\n"
          + "".join(f"\n{line}.\n" for line in skipped))
    print("\n" + md)
    if args.results:
        paths = write_result(args.results, {"threads": threads, "matmul_gflops": {str(k): v for k, v in peak.items()},
                                            "tolerance": args.tolerance, "rows": rows, "skipped": skipped}, md, model="shipped",
                             command="python benchmarks/unet_throughput.py " + " ".join(sys.argv[1:]),
                             wall_s=time.time() - t_start)
        print("wrote " + " and ".join(map(str, paths)))


if __name__ == "__main__":
    main()
