"""``train.py --evolve N``: hyperparameter evolution, as stock YOLOv5's.

Generation 0 trains with the ``--hyp`` file as given; each later one with a child of one of the five fittest
generations so far (drawn with weight ``fitness - lowest + 1e-6``): every evolvable value is multiplied, with
probability 0.8, by ``1 + gain x N(0, 1) x U(0, 1) x 0.2`` (clipped to 0.3-3x), then kept inside its range
(:func:`search_space`: stock's ranges for the optimiser and augmentation, and each of the model's tasks'
ranges for its loss hyperparameters, ``Task.evolve_ranges``). A generation trains with ``--noval --nosave``
(only its final epoch is validated) and is scored by the fitness ``best.pt`` uses.

The run folder holds ``evolve.csv`` (a row per generation: fitness, metrics, hyperparameters; rewritten
atomically after each), ``generations/<n>/`` (each run's results.csv and hyp.yaml; its weights are deleted),
``hyp_evolve.yaml`` (the fittest generation's hyperparameters: ``--hyp`` for the real training) and
``evolve.png``. Running the same command again with ``--name <that folder> --exist-ok`` continues: the rows of
``evolve.csv`` are the population, and only the missing generations run.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from ..atomic import atomic_write
from ..errors import FlagError
from . import distributed
from .runs import increment_path
from .trainer import TrainOptions, load_hyp, train
from .validator import fitness

LOGGER = logging.getLogger(__name__)

# hyp key: (mutation gain, lowest, highest). Gain 0 keeps the value; 1 mutates fully. The optimiser and the
# augmentation, stock's ranges; each task declares its own loss hyperparameters (``Task.evolve_ranges``).
SEARCH_SPACE: dict[str, tuple[float, float, float]] = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95), "warmup_bias_lr": (1, 0.0, 0.2),
    "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9), "degrees": (1, 0.0, 45.0),
    "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0), "perspective": (0, 0.0, 0.001),
    "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0), "mixup": (1, 0.0, 1.0),
    "copy_paste": (1, 0.0, 1.0),
}
PARENTS = 5  # the fittest generations a child is drawn from
MUTATION_P, MUTATION_SIGMA = 0.8, 0.2
Space = dict[str, tuple[float, float, float]]


def search_space(tasks: Sequence[Any] | None = None) -> Space:
    """:data:`SEARCH_SPACE` plus the loss hyperparameters of ``tasks`` (task classes; None: every registered one)."""
    from ..tasks import TASKS

    space = dict(SEARCH_SPACE)
    for task in TASKS if tasks is None else tasks:
        space.update(task.evolve_ranges)
    return space


def evolvable(hyp: dict[str, Any], space: Space | None = None) -> list[str]:
    """The keys of ``hyp`` that evolve: numbers with a range in ``space`` (default: every task's), in its order."""
    space = search_space() if space is None else space
    return [k for k in space if isinstance(hyp.get(k), (int, float)) and not isinstance(hyp.get(k), bool)]


def model_tasks(cfg: str) -> list[Any] | None:
    """The task classes of the model ``cfg`` builds (None if it cannot be built alone, e.g. before its features)."""
    from ..models import build_model
    from ..tasks import tasks_of

    try:
        return [type(task) for task in tasks_of(build_model(cfg))]
    except Exception as e:  # noqa: BLE001 - any failure only means: every task's gains evolve
        LOGGER.debug("evolve: %s not built alone (%s); every task's gains evolve", cfg, e)
        return None


def bounded(hyp: dict[str, Any], space: Space | None = None) -> dict[str, Any]:
    """Every evolvable value inside its range in ``space``, rounded to 5 decimals (as stock)."""
    space = search_space() if space is None else space
    out = dict(hyp)
    for k in evolvable(hyp, space):
        _, low, high = space[k]
        out[k] = round(float(min(max(out[k], low), high)), 5)
    return out


def mutate(parent: dict[str, Any], rng: np.random.Generator, space: Space | None = None) -> dict[str, Any]:
    """A child of ``parent``: at least one value evolvable in ``space`` changed, unless none can."""
    space = search_space() if space is None else space
    keys = evolvable(parent, space)
    gains = np.array([space[k][0] for k in keys], np.float64)
    factors = np.ones(len(keys))
    for _ in range(1000):  # draw until something changes (every gain 0: nothing can)
        if not (factors == 1).all() or not gains.any():
            break
        chosen = rng.random(len(keys)) < MUTATION_P
        factors = (gains * chosen * rng.standard_normal(len(keys)) * rng.random() * MUTATION_SIGMA + 1).clip(0.3, 3.0)
    child = dict(parent)
    for k, f in zip(keys, factors):
        child[k] = float(parent[k]) * f
    return bounded(child, space)


def choose_parent(rows: list[dict[str, Any]], rng: np.random.Generator) -> dict[str, Any]:
    """One of the :data:`PARENTS` fittest rows, drawn with weight ``fitness - lowest + 1e-6``."""
    best = sorted(rows, key=lambda r: -r["fitness"])[:PARENTS]
    weights = np.array([r["fitness"] for r in best]) - min(r["fitness"] for r in best) + 1e-6
    return best[rng.choice(len(best), p=weights / weights.sum())]


def read_population(path: Path, hyp_keys: list[str]) -> list[dict[str, Any]]:
    """The rows of an ``evolve.csv``: fitness, and the hyperparameters (as numbers)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [k for k in ["fitness", *hyp_keys] if rows and k not in rows[0]]
    if missing:
        raise FlagError(f"{path}: no columns {missing}; continue an evolution with the --hyp it started from, or "
                        "evolve into a new folder")
    return [{"fitness": float(r["fitness"]), "hyp": {k: float(r[k]) for k in hyp_keys}, "row": r} for r in rows]


def write_population(path: Path, rows: list[dict[str, str]]) -> None:
    columns = list(rows[0])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def evolve(opt: TrainOptions, generations: int = 300) -> dict[str, Any]:
    """Run the evolution (see the module docstring); return the fittest generation's row and hyperparameters."""
    if generations < 1:
        raise FlagError(f"--evolve {generations}: give the number of generations (1 or more)")
    if opt.resume:
        raise FlagError("--evolve and --resume: an evolution continues when run again in its folder (--name "
                        "<folder> --exist-ok), not by --resume")
    if distributed.is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FlagError("--evolve runs one process; start it without torchrun (as stock)")
    project = Path("runs/evolve") if Path(opt.project) == Path(TrainOptions.project) else Path(opt.project)
    save_dir = increment_path(project / opt.name, opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    base = load_hyp(opt.hyp)
    space = search_space(model_tasks(opt.cfg))
    keys = evolvable(base, space)
    csv_path = save_dir / "evolve.csv"
    population = read_population(csv_path, keys)
    rows = [p["row"] for p in population]
    if population:
        LOGGER.info(f"evolve: continuing {csv_path} from generation {len(population)}")
    for generation in range(len(population), generations):
        rng = np.random.default_rng([opt.seed, generation])  # a continued evolution draws what it would have
        hyp = (bounded(base, space) if generation == 0
               else mutate({**base, **choose_parent(population, rng)["hyp"]}, rng, space))
        run_dir = save_dir / "generations" / str(generation)
        run_dir.mkdir(parents=True, exist_ok=True)
        hyp_file = run_dir / "hyp.yaml"
        hyp_file.write_text(yaml.safe_dump(hyp, sort_keys=False))
        LOGGER.info(f"evolve: generation {generation + 1}/{generations}")
        metrics = train(replace(opt, hyp=str(hyp_file), project=str(run_dir.parent), name=str(generation),
                                exist_ok=True, noval=True, nosave=True, noplots=True))
        shutil.rmtree(run_dir / "weights", ignore_errors=True)  # 300 generations of weights would fill a disk
        score = fitness(metrics)
        row = {"generation": str(generation), "fitness": f"{score:.6g}",
               **{f"metrics/{k}": f"{v:.6g}" for k, v in metrics.items()
                  if isinstance(v, float) and k != "best_fitness"},
               **{k: f"{hyp[k]:.6g}" for k in keys}}
        rows.append(row)
        population.append({"fitness": score, "hyp": {k: float(hyp[k]) for k in keys}, "row": row})
        write_population(csv_path, rows)
    best = max(population, key=lambda p: p["fitness"])
    best_hyp = {**base, **best["hyp"]}
    header = (f"# yolostitch --evolve: the fittest of {len(population)} generations (generation "
              f"{best['row']['generation']}, fitness {best['fitness']:.5f}); train with --hyp {save_dir / 'hyp_evolve.yaml'}\n")
    atomic_write(save_dir / "hyp_evolve.yaml", lambda f: f.write((header + yaml.safe_dump(best_hyp, sort_keys=False)).encode()))
    if not opt.noplots:
        _plot(population, keys, save_dir / "evolve.png")
    LOGGER.info(f"evolve: {len(population)} generations in {save_dir}; the fittest is generation "
                f"{best['row']['generation']} (fitness {best['fitness']:.5f}), its hyperparameters in "
                f"{save_dir / 'hyp_evolve.yaml'}")
    return {"save_dir": str(save_dir), "best": best["row"], "hyp": best_hyp}


def _plot(population: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """Fitness against each hyperparameter, one panel each, the fittest generation marked (stock's evolve.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = np.array([p["fitness"] for p in population])
    best = int(fit.argmax())
    cols = 6
    rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.2 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        values = np.array([p["hyp"][k] for p in population])
        ax.scatter(values, fit, c=fit, cmap="viridis", s=12, alpha=0.8)
        ax.plot(values[best], fit[best], "k+", markersize=12)
        ax.set_title(f"{k} = {values[best]:.3g}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
