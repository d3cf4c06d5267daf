"""CPU throughput of the shipped UNet: what channels_last, bf16 autocast, torch.compile, threads and batch size buy.

    python -m benchmarks.perf.unet_throughput [--batches 16 64 128] [--repeats 5] [--no-compile] [--results STEM]

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

import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import harness
from minitune.families import denoiser_for
from minitune.tools.sweep import markdown_table
from minitune.toy import world

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
    pipe = harness.load_model()
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


def settings_to_time(threads: int, compile_too: bool) -> tuple[list[dict], list[str]]:
    """The settings timed (fp32 on all threads first, the reference) and the lines saying which were left out."""
    settings = [{"name": "fp32", "threads": threads}, {"name": "fp32, 1 thread", "threads": 1},
                {"name": "channels_last", "threads": threads, "channels_last": True},
                {"name": "bf16 autocast", "threads": threads, "bf16": True}]
    skipped = []
    if not bf16_native():  # emulated bf16 is many times slower than fp32: report it, do not time it
        settings = [s for s in settings if not s.get("bf16")]
        skipped = [f"bf16 autocast: not timed, this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 "
                   "instructions (AVX512-BF16 or AMX)"]
    if compile_too:
        settings.append({"name": "torch.compile", "threads": threads, "compile": True})
    return settings, skipped


def measure_all(settings: list[dict], batches: list[int], repeats: int) -> list[dict]:
    """One row per (setting, batch): fp32 at every batch (each batch's reference), then the others at batch 64."""
    runs = [(settings[0], b) for b in sorted({*batches, 64})] + [(s, 64) for s in settings[1:]]  # 64: the reference
    references, rows = {}, []
    for setting, batch in runs:  # the fp32 runs come first and are their batch's reference
        row, out = measure(setting, batch, repeats, references.get(batch))
        references.setdefault(batch, out)
        rows.append({"setting": setting["name"], "batch": batch, **row})
        print(rows[-1], flush=True)
    return rows


def add_ratios(rows: list[dict], peak: dict, threads: int, tolerance: float) -> None:
    """Each working row's speed against fp32 at batch 64, its share of the matmul's GFLOP/s, and whether it is kept."""
    ref = next(r for r in rows if r["setting"] == "fp32" and r["batch"] == 64)
    for r in rows:
        if "error" not in r:
            r["speed_ratio"] = r["candidates_per_min"] / ref["candidates_per_min"]
            n = 1 if r["setting"].endswith("1 thread") else threads
            r["share_of_matmul"] = r["gflops"] / peak[n]
            r["within_tolerance"] = r["max_rel_diff"] <= tolerance


def markdown(rows: list[dict], peak: dict, threads: int, tolerance: float, skipped: list[str]) -> str:
    """The results page: the matmul reference, then one table row per setting and batch."""
    table = markdown_table([
        {"setting": r["setting"], "batch": r["batch"],
         **({"candidates/min at 10 steps": f"{r['candidates_per_min']:.0f}", "× fp32 batch 64": f"{r['speed_ratio']:.2f}",
             "GFLOP/s": f"{r['gflops']:.1f}", "of the matmul's": f"{100 * r['share_of_matmul']:.0f} %",
             "max relative Δε̂": f"{r['max_rel_diff']:.1e}", "kept": "yes" if r["within_tolerance"] else "no",
             "first call s": f"{r['first_call_s']:.1f}"} if "error" not in r else {"candidates/min at 10 steps": r["error"]})}
        for r in rows])
    return (f"The shipped UNet's guided forward (2B rows per call) on {threads} CPU threads; fp32 dense matmul: "
            + ", ".join(f"{peak[n]:.0f} GFLOP/s on {n} thread(s)" for n in sorted(peak))
            + f". A setting is kept when its ε̂ stays within {tolerance:g} (relative L2 per image) of fp32.\n\n{table}\n"
            + "".join(f"\n{line}.\n" for line in skipped))


def main(argv=None) -> int:
    ap = harness.parser(__file__, __doc__, model=None)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out (its first call compiles)")
    run = harness.start(ap, argv)
    args = run.args
    threads = torch.get_num_threads()
    settings, skipped = settings_to_time(threads, not args.no_compile)
    rows = measure_all(settings, args.batches, args.repeats)
    peak = {n: matmul_gflops(n) for n in {s["threads"] for s in settings}}
    add_ratios(rows, peak, threads, args.tolerance)
    md = markdown(rows, peak, threads, args.tolerance, skipped)
    print("\n" + md)
    run.write({"threads": threads, "matmul_gflops": {str(k): v for k, v in peak.items()}, "tolerance": args.tolerance,
               "rows": rows, "skipped": skipped}, md)
    return 0


if __name__ == "__main__":
    harness.main(main)
