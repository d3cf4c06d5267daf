"""The whole MI-TUNE experiment in the Shapes world, with its honest controls.

    base model ─► candidate pool (N per training prompt, MI recorded) ─► sets of k per prompt, all from that pool:
                  MI top-k (paper MI and/or re-noising MI) · random-k (no filtering) · oracle top-k (upper bound)
              ─► a LoRA adapter fine-tuned on each set (optionally several self-training rounds)
              ─► every model judged on the held-out test prompts, same seeds, plus a CFG sweep of the base

Every stage writes into one output folder and is skipped when its result is already there, so a
killed run continues where it stopped. ``results.json`` holds the settings, timings and every
evaluation's summary; ``results.md`` the tables; ``figures/`` a per-category bar chart and a
before/after grid on the same seeds.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import GUIDANCE_SCALE, resolve_device
from ..evaluate import EvalResult, comparison_table, evaluate_pipeline, paired_delta
from ..finetune import OBJECTIVES, WEIGHTS_NAME, finetune, load_finetune_set
from ..images import to_uint8
from ..io import atomic_write, claim, markdown_table, slug
from ..tools.results import write_result
from ..sampling import SAMPLERS, use_sampler
from ..selection import SIGNALS, build_pool, check_pairing, pool_complete, sample_options, select
from .pipeline import load_pipeline
from .scoring import oracle_scorer
from .world import FAILURE_MODES, eval_prompts, render_batch, train_prompts


@dataclass(frozen=True)
class ExperimentConfig:
    n_prompts: int = 64  # training-split prompts in the candidate pool
    candidates: int = 16  # N
    top_k: int = 2  # k
    # MI signals that rank candidates, one fine-tuned arm each: "mi" (the paper's trajectory MI, the
    # reference), "mi_renoise" (re-noising orthogonal MI of the final image, renoise_samples > 0) and
    # "mi_contrast" (point-wise MI under the prompt minus under its best near miss, contrast_samples > 0)
    selectors: tuple[str, ...] = ("mi", "mi_contrast")
    renoise_samples: int = 0
    contrast_samples: int = 8
    guidance_scale: float = GUIDANCE_SCALE
    sampler: str = "ddpm"  # for the pool and every evaluation: a name in minitune.sampling.SAMPLERS
    steps: int = 25
    rounds: int = 1  # self-training rounds: generate → filter → fine-tune from the previous adapter
    rank: int = 8
    alpha: float = 8.0
    finetune_steps: int = 150
    finetune_batch: int = 16
    lr: float = 3e-4
    # prompts dropped to "" while fine-tuning, as in base training: without it the adapter also moves the
    # unconditional prediction, which nothing anchors, and classifier-free guidance breaks
    prompt_dropout: float = 0.1
    # "mse": fine-tune on each arm's top-k (the paper); "dpo": Diffusion-DPO on each arm's k pairs per prompt, its
    # r-th best candidate against a worse one, which cancels what both share (how the model itself draws)
    objective: str = "mse"
    dpo_beta: float = 2000.0
    # which worse one: "extremes" the r-th worst, "nearest" a hard negative (minitune.selection.PAIRINGS)
    pairing: str = "extremes"
    eval_per_category: int = 30  # held-out test prompts per category (fewer where a category has fewer)
    eval_images: int = 2  # images per test prompt (same seeds for every model)
    cfg_sweep: tuple[float, ...] = (4.0,)  # extra CFG scales for the base model
    seed: int = 0
    batch_size: int = 64


PRESETS = {
    "tiny": ExperimentConfig(n_prompts=4, candidates=3, top_k=1, steps=3, selectors=("mi", "mi_renoise", "mi_contrast"),
                             renoise_samples=2, contrast_samples=2, finetune_steps=3, finetune_batch=2,
                             eval_per_category=1, eval_images=2),
    # chosen on training-split dev prompts, each choice by the run that measured it: the objective (DPO rather
    # than the paper's mse) by book/results/self_training_dev.md; the sampler is the pipeline's own, DDPM at 25
    # steps, because the few-step samplers change the calibrated base's failure profile
    # (book/results/base_calibration_dev_*.md); the contrast's samples to fit the run in 90 minutes on 2 cores,
    # the pairs, pool size and pairing by book/results/dpo_pairs_dev_* (measured on the previous base)
    "full": ExperimentConfig(n_prompts=80, contrast_samples=4, sampler="ddpm", steps=25, objective="dpo",
                             pairing="nearest", finetune_steps=200, prompt_dropout=0.0, cfg_sweep=()),
    # the paper's recipe (the denoising loss on each arm's top-k, prompt dropout 0.1) on the full recipe's pool
    # and evaluation: `--recipe paper --pool-from` the full run's folder changes only the fine-tuning
    "paper": ExperimentConfig(n_prompts=80, contrast_samples=4, sampler="ddpm", steps=25, cfg_sweep=()),
}

# what the shared pool and the base model's evaluation depend on (reuse_from)
POOL_SETTINGS = ("n_prompts", "candidates", "selectors", "renoise_samples", "contrast_samples", "guidance_scale",
                 "sampler", "steps", "seed", "batch_size")
EVAL_SETTINGS = ("eval_per_category", "eval_images", "guidance_scale", "sampler", "steps", "seed", "batch_size")

CONTROLS = ("random", "oracle")
ARM_NAMES = {"mi": "MI-TUNE (paper MI)", "mi_renoise": "MI-TUNE (re-noise MI)", "mi_contrast": "MI-TUNE (contrast MI)",
             "random": "random-k", "oracle": "oracle top-k"}


def _write_json(path: Path, data) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def _check(cfg: ExperimentConfig) -> None:
    """One sentence for a config the experiment cannot run, before anything is written."""
    if not cfg.selectors or set(cfg.selectors) - set(SIGNALS):
        raise ValueError(f"selectors must be one or more of {', '.join(SIGNALS)}, got {cfg.selectors}.")
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {cfg.sampler!r}: use one of {', '.join(SAMPLERS)}.")
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {cfg.objective!r}: use one of {', '.join(OBJECTIVES)}.")
    check_pairing(cfg.pairing)
    for signal, option in sample_options(cfg.selectors).items():
        if getattr(cfg, option) < 2:
            raise ValueError(f"The {signal} selector needs {option} ≥ 2 (MI samples per candidate).")


def _claim(out: Path, cfg: ExperimentConfig, model) -> None:
    """Create `out`, or reopen it to continue, refusing one that holds an experiment with other settings."""
    def refuse(changes: str) -> str:
        return f"{out} holds an experiment with other settings ({changes}); use a new output folder or the same settings."
    claim(out / "config.json", {"config": asdict(cfg), "model": str(model or "toy")}, refuse,
          view=lambda s: {**s["config"], "model": s["model"]})


def reuse_from(source, out, cfg: ExperimentConfig, model=None) -> list[str]:
    """Copy into `out` the first round's candidate pool and the base model's evaluation of the finished
    experiment in `source`, where both were made with `cfg`'s settings for them (POOL_SETTINGS,
    EVAL_SETTINGS) and the same model; returns what was copied.

    An experiment that changes only how the adapters are fine-tuned (the objective, its steps, prompt
    dropout) then ranks the same candidates and compares with the same base row, and skips the two
    most expensive stages. Refuses, in one sentence, a source made with other settings."""
    source, out = Path(source), Path(out)
    try:
        saved = json.loads((source / "config.json").read_text())
    except FileNotFoundError:
        raise ValueError(f"{source} holds no experiment (no config.json) to reuse a pool from.") from None
    mine = asdict(cfg)
    if saved["model"] != str(model or "toy"):
        raise ValueError(f"{source} was run on {saved['model']}, not {model or 'toy'}: its pool cannot be reused.")
    if not pool_complete(source / "round1" / "pool"):
        raise ValueError(f"{source} has no finished pool yet: finish that experiment first, or drop --pool-from.")
    copied = []
    wanted = {"pool": (POOL_SETTINGS, [source / "round1" / "pool"]),
              "base evaluation": (EVAL_SETTINGS, sorted((source / "eval").glob("base.*")))}
    for what, (names, paths) in wanted.items():
        differ = [f"{k} {saved['config'].get(k)} → {mine[k]}" for k in names
                  if json.loads(json.dumps(mine[k])) != saved["config"].get(k)]
        if differ:
            if what == "pool":
                raise ValueError(f"{source}'s pool was made with other settings ({', '.join(differ)}).")
            continue  # the base model is evaluated again, with this experiment's settings
        for path in paths:
            target = out / path.relative_to(source)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if path.is_dir() else shutil.copyfile)(path, target)
        copied.append(what)
    return copied


@dataclass
class _Context:
    """What every stage of one experiment needs: its folder, config, model, device, and the timings so far."""

    out: Path
    cfg: ExperimentConfig
    model: object
    device: object
    progress: bool
    timings: dict = field(default_factory=dict)

    def pipeline(self, adapter=None):
        """A fresh base pipeline with the experiment's sampler, and `adapter` loaded if given."""
        pipe = use_sampler(load_pipeline(self.model, device=self.device), self.cfg.sampler)
        pipe.set_progress_bar_config(disable=True)
        if adapter is not None:
            pipe.load_lora_weights(str(adapter))
        return pipe

    def timed(self, key: str, fn, *args, **kwargs) -> None:
        t0 = time.time()
        fn(*args, **kwargs)
        self.timings[key] = time.time() - t0


def _rounds(ctx: _Context, arms: tuple[str, ...]) -> dict[str, Path]:
    """Every self-training round: the pool(s), each arm's set and its LoRA; returns each arm's last adapter."""
    cfg = ctx.cfg
    prompts = train_prompts(cfg.n_prompts, seed=cfg.seed)
    adapters: dict[str, Path | None] = dict.fromkeys(arms)
    # the pool scores only what a selector ranks by: re-noising and contrast MI cost network evaluations
    wanted = sample_options(cfg.selectors).values()
    pool_args = dict(guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.steps, batch_size=cfg.batch_size,
                     progress=ctx.progress, **{option: getattr(cfg, option) if option in wanted else 0
                                               for option in sample_options(SIGNALS).values()})
    for r in tqdm(range(1, cfg.rounds + 1), desc="rounds", disable=not ctx.progress or cfg.rounds == 1):
        rdir = ctx.out / f"round{r}"
        # round 1: one pool from the base model for every arm; later rounds: each arm samples its own model
        pools = dict.fromkeys(arms, rdir / "pool") if r == 1 else {a: rdir / a / "pool" for a in arms}
        for arm in dict.fromkeys(arms if r > 1 else arms[:1]):
            if not pool_complete(pools[arm]):
                ctx.timed(f"round{r}/pool/{arm if r > 1 else 'shared'}", build_pool, ctx.pipeline(adapters[arm]),
                          prompts, pools[arm], cfg.candidates, seed=cfg.seed + r - 1, **pool_args)
        for arm in arms:
            set_dir, lora_dir = rdir / arm / "set", rdir / arm / "lora"
            if not (set_dir / "manifest.json").exists():
                select(pools[arm], set_dir, cfg.top_k, by=arm, seed=cfg.seed, pairs=cfg.objective == "dpo",
                       pairing=cfg.pairing)
            if not (lora_dir / WEIGHTS_NAME).exists():
                ctx.timed(f"round{r}/finetune/{arm}", finetune, ctx.pipeline(), set_dir, lora_dir, rank=cfg.rank,
                          alpha=cfg.alpha, steps=cfg.finetune_steps, batch_size=cfg.finetune_batch, lr=cfg.lr,
                          prompt_dropout=cfg.prompt_dropout, seed=cfg.seed,
                          init_adapter=adapters[arm] and str(adapters[arm]), objective=cfg.objective,
                          dpo_beta=cfg.dpo_beta, sample_prompts=0, progress=ctx.progress)
            adapters[arm] = lora_dir
    return adapters


def _evaluate(ctx: _Context, models: dict) -> dict[str, EvalResult]:
    """Judge each model {name: (adapter, guidance)} on the held-out prompts, keeping its records and images."""
    cfg = ctx.cfg
    test_prompts = eval_prompts(cfg.eval_per_category, seed=cfg.seed)
    results: dict[str, EvalResult] = {}
    (ctx.out / "eval").mkdir(exist_ok=True)
    for name, (adapter, g) in tqdm(models.items(), desc="evaluate", disable=not ctx.progress):
        path, images = ctx.out / "eval" / f"{slug(name)}.json", ctx.out / "eval" / f"{slug(name)}.images.npy"
        if path.exists() and images.exists():
            results[name] = EvalResult.load(path)
            continue
        t0 = time.time()
        res, cands = evaluate_pipeline(ctx.pipeline(adapter), test_prompts, cfg.eval_images, guidance_scale=g,
                                       num_inference_steps=cfg.steps, seed=cfg.seed + 1000,
                                       batch_size=cfg.batch_size, progress=ctx.progress)
        if path.exists():  # judged before every image was kept: the same seeds again, for `minitune compare`
            results[name] = EvalResult.load(path)
            _keep_images(images, cands.images, res, results[name])
            continue
        ctx.timings[f"evaluate/{name}"] = time.time() - t0
        np.save(ctx.out / "eval" / f"{slug(name)}.preview.npy", to_uint8(cands.images[:: cfg.eval_images]))
        np.save(images, to_uint8(cands.images))
        res.save(path)
        results[name] = res
    return results


def run_experiment(output_dir, cfg: ExperimentConfig = PRESETS["full"], *, model=None, device: str = "auto",
                   progress: bool = True, pool_from=None) -> dict:
    """Run (or continue) the experiment in `output_dir`; returns the content of ``results.json``.

    `pool_from`: a finished experiment's folder whose pool (and base evaluation) this one reuses
    (:func:`reuse_from`)."""
    _check(cfg)
    out = Path(output_dir)
    _claim(out, cfg, model)
    if pool_from is not None:
        reused = reuse_from(pool_from, out, cfg, model)
        _write_json(out / "reused.json", {"from": str(pool_from), "what": reused})
    ctx = _Context(out, cfg, model, resolve_device(device), progress)
    arms = (*cfg.selectors, *CONTROLS)
    adapters = _rounds(ctx, arms)
    models = {"base": (None, cfg.guidance_scale), **{ARM_NAMES[a]: (adapters[a], cfg.guidance_scale) for a in arms}}
    models.update({f"base, CFG {g:g}": (None, g) for g in cfg.cfg_sweep})
    results = _evaluate(ctx, models)
    return _report(out, cfg, results, ctx.timings, _set_quality(out, cfg, arms))


def _keep_images(path: Path, images, again: EvalResult, saved: EvalResult) -> None:
    """Save `images` (one per record, the viewer's input) for an evaluation judged earlier, only where sampling
    them again reproduced its records (same verdicts, MI within 1e-4 nats); otherwise warn and save nothing."""
    import warnings

    keys = [k for k in saved.records[0] if k != "mi"] if saved.records else []
    same = len(again.records) == len(saved.records) and all(
        [a.get(k) for k in keys] == [b.get(k) for k in keys] and abs(a["mi"] - b["mi"]) < 1e-4
        for a, b in zip(again.records, saved.records))
    if same:
        np.save(path, to_uint8(images))
    else:
        warnings.warn(f"Sampling the evaluation again did not reproduce {path.with_suffix('').with_suffix('.json')}; "
                      "its images are not saved (the viewer shows its previews only).", stacklevel=2)


def arm_rows(results: dict[str, EvalResult], cfg: ExperimentConfig) -> dict:
    """One row per arm, keyed "base", "random", "oracle", "mi", ...: strict, its paired change vs the base with a
    95 % CI over prompts, well-formed, coloured area and, for the MI arms, their share of the oracle arm's gain
    and their paired change in strict alignment vs random-k with its CI."""
    base = results["base"]
    ids = {"base": "base", **{ARM_NAMES[a]: a for a in (*cfg.selectors, *CONTROLS)}}
    rows = {}
    for name, arm in ids.items():
        s = results[name].summary()["all"]
        delta, ci = (0.0, (0.0, 0.0)) if arm == "base" else paired_delta(base, results[name], "strict", "all")
        rows[arm] = {"name": name, "strict": s["strict"], "delta_strict": delta, "delta_ci": list(ci),
                     "well_formed": s["well_formed"], "area": s.get("area", float("nan"))}
    gain = rows["oracle"]["delta_strict"]
    for arm in cfg.selectors:
        rows[arm]["share_of_oracle"] = rows[arm]["delta_strict"] / gain if gain > 0 else None
        # an MI arm has to beat no selection at all, not only the base: paired on the same prompts and seeds
        delta, ci = paired_delta(results[ARM_NAMES["random"]], results[ARM_NAMES[arm]], "strict", "all")
        rows[arm]["delta_vs_random"], rows[arm]["vs_random_ci"] = delta, list(ci)
    return rows


def renders_reference(cfg: ExperimentConfig) -> dict:
    """The world's own renders of the held-out prompts (``eval_images`` layouts of each), judged as the models are:
    how much a model of this world should draw. The base need not match it: it over-draws."""
    prompts = [p for p in eval_prompts(cfg.eval_per_category, seed=cfg.seed) for _ in range(cfg.eval_images)]
    scores = oracle_scorer(render_batch(prompts, range(cfg.seed + 1000, cfg.seed + 1000 + len(prompts))), prompts)
    return {"name": "renders of the test prompts", "images": len(prompts),
            **{k: float(scores[k].mean()) for k in ("strict", "well_formed", "area")}}


def publish(data: dict, results_dir, *, model: str, command: str, wall_s: float, commit: str | None = None,
            figures=None, name: str = "experiment") -> tuple[Path, Path]:
    """Write ``{name}.json`` and ``{name}.md`` into `results_dir` (the book's results), headed with the
    model, the commit (default: the current one), the command and the wall time, from an experiment's
    ``results.json`` content; `figures`, the experiment's figures folder, adds copies of its category bars
    and before/after grid as ``{name}-*.png``."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    body = {"config": data["config"], "arms": data["arms"], "sets": data["sets"], "summaries": data["summaries"],
            **{k: data[k] for k in ("renders", "reused") if k in data}}
    before = json.loads((folder / f"{name}.json").read_text()) if (folder / f"{name}.json").is_file() else {}
    if before and json.loads(json.dumps(body)) == {k: before.get(k) for k in body}:
        commit = before["commit"]  # the same measurements published again keep the commit that made them
    if figures is not None:
        for fig in ("categories", "before_after"):
            if (Path(figures) / f"{fig}.png").is_file():
                shutil.copyfile(Path(figures) / f"{fig}.png", folder / f"{name}-{fig.replace('_', '-')}.png")
    renders = data.get("renders")
    rows = []
    for arm, r in data["arms"].items():
        share = r.get("share_of_oracle")
        rows.append([r["name"], f"{100 * r['strict']:.1f}", "–" if arm == "base" else
                     f"{100 * r['delta_strict']:+.1f} ({100 * r['delta_ci'][0]:+.1f} to {100 * r['delta_ci'][1]:+.1f})",
                     f"{100 * r['well_formed']:.1f}", f"{r['area']:.0f}",
                     *([f"{100 * (r['area'] / renders['area'] - 1):+.0f} %"] if renders else []),
                     f"{100 * share:.0f} %" if share is not None else "–"])
    if renders:
        rows.append([renders["name"], f"{100 * renders['strict']:.1f}", "–", f"{100 * renders['well_formed']:.1f}",
                     f"{renders['area']:.0f}", "–", "–"])
    columns = ["arm", "strict %", "Δ strict vs base (95 % CI)", "well-formed %", "coloured px",
               *(["coloured px vs renders"] if renders else []), "share of oracle's gain"]
    table = markdown_table(rows, columns, align="l" + "r" * (len(columns) - 1))
    return write_result(folder / name, body, table, model=model, command=command, wall_s=wall_s, commit=commit)


def _set_quality(out: Path, cfg: ExperimentConfig, arms) -> dict:
    """The oracle's verdict on what each arm fine-tunes on: {"round r": {arm name: means}} (pool = all candidates).

    Besides the mean strict, soft, well-formed and MI, each row holds the fraction of images showing each
    of the oracle's failure modes (``world.FAILURE_MODES``), judged again from the set's PNG files."""
    quality = {}
    for r in range(1, cfg.rounds + 1):
        rdir = out / f"round{r}"
        folders = ({"pool (all candidates)": rdir / "pool"} if r == 1 else {}) | {ARM_NAMES[a]: rdir / a / "set" for a in arms}
        rows = {}
        for name, folder in folders.items():
            data = load_finetune_set(folder)
            records = data.records
            rows[name] = {k: float(np.mean([rec[k] for rec in records])) for k in ("strict", "soft", "well_formed", "mi")}
            rows[name]["images"] = len(records)
            scores = oracle_scorer(data.images, data.prompts)
            rows[name]["failures"] = {m: float(scores[m].mean()) for m in FAILURE_MODES}
        quality[f"round {r}"] = rows
    return quality


def _failure_rows(label: str, rates: dict) -> str:
    """Markdown: {row name: {failure mode: rate}} as % per oracle failure mode (– where a row lacks one,
    e.g. an evaluation saved before failure modes were recorded)."""
    rows = [[name, *(f"{100 * r[m]:.1f}" if m in r else "–" for m in FAILURE_MODES)] for name, r in rates.items()]
    return markdown_table(rows, [label, *FAILURE_MODES], align="l" + "r" * len(FAILURE_MODES))


def _set_table(rows: dict) -> str:
    """Markdown: the oracle's verdict on each set of one round, {set name: means} as :func:`_set_quality` gives."""
    cells = [[k, v["images"], f"{100 * v['strict']:.1f}", f"{100 * v['soft']:.1f}", f"{100 * v['well_formed']:.1f}",
              f"{v['mi']:.1f}"] for k, v in rows.items()]
    return markdown_table(cells, ["set", "images", "strict %", "soft %", "well-formed %", "mean trajectory MI"],
                          align="lrrrrr")


def _report(out: Path, cfg: ExperimentConfig, results: dict[str, EvalResult], timings: dict, sets: dict) -> dict:
    from ..tools.plotting import plot_category_bars, plot_model_grid

    main = {k: v for k, v in results.items() if "CFG" not in k}
    summaries = {k: v.summary() for k, v in results.items()}
    old = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    timings = {**old.get("timings", {}), **timings}
    strict = {k: s["all"]["strict"] for k, s in summaries.items()}
    gap = strict[ARM_NAMES["oracle"]] - strict["base"]
    closed = {ARM_NAMES[a]: (strict[ARM_NAMES[a]] - strict["base"]) / gap if gap > 0 else float("nan")
              for a in cfg.selectors}
    data = {"config": asdict(cfg), "timings": timings, "summaries": summaries, "closed_fraction": closed, "sets": sets,
            "arms": arm_rows(results, cfg), "renders": renders_reference(cfg)}
    if (out / "reused.json").is_file():
        data["reused"] = json.loads((out / "reused.json").read_text())
    _write_json(out / "results.json", data)
    md = (f"# MI-TUNE in the Shapes world\n\n{len(results['base'].per_prompt('strict'))} held-out test prompts × "
          f"{cfg.eval_images} images, CFG {cfg.guidance_scale:g}, {cfg.sampler} {cfg.steps} steps; "
          f"pool of {cfg.n_prompts} training prompts × {cfg.candidates} candidates, top {cfg.top_k}; "
          f"LoRA rank {cfg.rank}, {cfg.finetune_steps} steps, "
          f"{cfg.rounds} round(s)"
          + (f"; {' and '.join(data['reused']['what'])} from {data['reused']['from']}" if "reused" in data else "")
          + ".\n\n## Strict alignment % (95 % CI over prompts)\n\n"
          f"{comparison_table(main, 'strict', 'base')}\n\nThe world's own renders of these prompts draw "
          f"{data['renders']['area']:.0f} coloured px per image ({summaries['base']['all']['area']:.0f} for the base).\n\n"
          f"## Soft alignment %\n\n{comparison_table(main, 'soft', 'base')}\n\n"
          "## Failure modes on the held-out prompts (% of images; modes can co-occur)\n\n"
          f"{_failure_rows('model', {k: summaries[k]['all'] for k in main})}\n\n"
          "## What each arm fine-tunes on (the oracle's verdict on the selected training candidates)\n\n"
          + "".join(f"{r}:\n\n{_set_table(rows)}\n\n" for r, rows in sets.items())
          + "Failure modes in each set (% of its images; modes can co-occur):\n\n"
          + "".join(f"{r}:\n\n{_failure_rows('set', {k: v['failures'] for k, v in rows.items()})}\n\n"
                    for r, rows in sets.items())
          + f"## CFG sweep of the base model (strict %)\n\n"
          f"{comparison_table({k: v for k, v in results.items() if k == 'base' or 'CFG' in k}, 'strict', 'base')}\n\n"
          + ("".join(f"{k} closes {100 * v:.0f} % of the strict-alignment distance from the base to oracle top-k.\n"
                     for k, v in closed.items()) if gap > 0 else
             "Oracle top-k does not beat the base in strict alignment here: there is no distance to close.\n"))
    (out / "results.md").write_text(md)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    plot_category_bars({k: s for k, s in summaries.items() if k in main}, "strict", figs / "categories.png")
    previews = {k: np.load(out / "eval" / f"{slug(k)}.preview.npy") for k in main}
    test_prompts = list(dict.fromkeys(r["prompt"] for r in results["base"].records))
    plot_model_grid(previews, figs / "before_after.png", n=6, titles=test_prompts)
    return data
