"""Multi-fidelity screening for `--strategy search --screen N` (experimental, off by default).

Before each full trial the runner calls `Screener.refill`: when the full study has no trial waiting,
`cfg.plan.screen` configs are proposed by a *screening study* (`<study>.screen`, same storage, same
sampler kind and seed) and scored with the cheap fidelity (`objective.screen_trial`: prune,
batch-norm statistics re-estimated, part of the validation split, no fine-tuning, no FPS). The
most promising screened config not yet promoted -- lowest Pareto rank by non-dominated sorting
over the screening objectives, ties broken by its exclusive hypervolume contribution in that rank
-- is `enqueue_trial`-ed into the full study, whose next ask runs it as a normal full-fidelity
trial (user attr `screened_from`). The enqueue happens under the study's budget lock, only when
no trial waits and the budget is not reached, so parallel searches never leave a trial behind.
The screening objectives are the search's with `fps` replaced by `macs` (FPS is not measured at
screening; MACs are its proxy).

Only full trials live in the full study, so only they can reach the front, the `pareto` tags,
hypervolume and export. The screening study holds every screened config (resume continues it);
`screen_stats` summarises it for MLflow (`configs_screened`, `screen_s` on the parent run).
"""

from __future__ import annotations

import optuna

from prunetune import interrupts

from prunetune.errors import ConfigError
from prunetune.search import pareto
from prunetune.search.objective import SearchSetup, screen_trial
from prunetune.search.objectives import get_objective
from prunetune.search.records import COMPLETE, REJECTED
from prunetune.search.study import budget_lock, count_finished, enqueue, make_sampler, params_of
from prunetune.search.study_store import load, storage_of, study_exists

SUFFIX = ".screen"


def screen_objectives(objectives: list[str]) -> list[str]:
    """The search's objectives for screening: fps -> macs (its proxy), left out when flops or macs
    (the same quantity up to a factor) is an objective already."""
    out: list[str] = []
    for o in objectives:
        if o == "fps":
            if any(x in objectives for x in ("flops", "macs")):
                continue
            o = "macs"
        if o not in out:
            out.append(o)
    return out


def screen_study_name(study_name: str) -> str:
    return study_name + SUFFIX


def open_screen_study(setup: SearchSetup, study: optuna.Study) -> optuna.Study:
    """The screening study of `study` (created on first use, in the same storage). A study of that
    name that is not this study's screening study is refused (ConfigError)."""
    cfg = setup.config
    objectives = screen_objectives(cfg.selection.objectives)
    name = screen_study_name(study.study_name)
    screen = load(
        storage_of(study, required=True),
        name,
        sampler=make_sampler(cfg, setup.space),
        directions=[get_objective(o).direction for o in objectives],
    )
    owner = screen.user_attrs.get("screen_of")
    if owner is None and screen.get_trials(deepcopy=False):
        raise ConfigError(
            f"study {name!r} exists and is not the screening study of {study.study_name!r}; "
            f"use another --study name, or search without --screen"
        )
    if owner is None:
        screen.set_user_attr("screen_of", study.study_name)
        screen.set_user_attr("objectives", objectives)
        screen.set_user_attr("base_metrics", setup.base_metrics)
    return screen


class Screener:
    """Screens configs for the full study `study` and promotes the most promising (see module)."""

    def __init__(self, setup: SearchSetup, study: optuna.Study) -> None:
        self.setup, self.study = setup, study
        self.screen = open_screen_study(setup, study)
        self.objectives = screen_objectives(setup.config.selection.objectives)

    def refill(self, deadline) -> bool:
        """Make sure the full study has a trial waiting: if none is, screen `cfg.plan.screen`
        configs and enqueue the best one not run yet. False when `deadline` (an object with
        `passed()`) passed while screening (nothing enqueued: the search should stop); True
        otherwise (also when no screened config qualifies: the full study's sampler then proposes
        the trial)."""
        if self._waiting():
            return True
        for _ in range(self.setup.config.plan.screen):
            if deadline.passed():
                return False
            self.screen_one()
        cfg = self.setup.config
        with budget_lock(self.study):  # never a trial left waiting past the budget, nor two at once
            finished, running = count_finished(self.study)
            best = (
                self.best_unpromoted()
                if finished + running < cfg.budget.trials and not self._waiting()
                else None
            )
            if best is not None:
                enqueue(self.study, best.params, screened_from=best.number)
        return True

    def _waiting(self) -> bool:
        waiting = optuna.trial.TrialState.WAITING
        return any(t.state == waiting for t in self.study.get_trials(deepcopy=False))

    def screen_one(self) -> None:
        """Ask the screening study for one config, score it cheaply, tell the result (a Ctrl-C
        during it fails the screened config, never leaving it RUNNING, and propagates)."""
        interrupts.check()
        trial = self.screen.ask()
        try:
            record = screen_trial(self.setup, self.setup.space.suggest(trial), trial.number)
        except KeyboardInterrupt:
            self.screen.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        trial.set_user_attr(
            "record",
            {
                "state": record.state,
                "metrics": record.metrics,
                "config": record.config,
                "reason": record.reason,
                "timings": record.timings,
                "seed": record.seed,
            },
        )
        if record.state == COMPLETE:
            values = [float(record.metrics[get_objective(o).key]) for o in self.objectives]
            self.screen.tell(trial, values)
        elif record.state == REJECTED:
            self.screen.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.screen.tell(trial, state=optuna.trial.TrialState.FAIL)

    def best_unpromoted(self) -> optuna.trial.FrozenTrial | None:
        """The screened config to promote: lowest Pareto rank among those neither promoted (a full
        trial says `screened_from` it) nor with the params of a full trial; within that rank the
        largest exclusive hypervolume contribution."""
        done = [
            t
            for t in self.screen.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE
        ]
        full = self.study.get_trials(deepcopy=False)
        taken = [params_of(t) for t in full]
        promoted = {t.user_attrs["screened_from"] for t in full if "screened_from" in t.user_attrs}
        points = [t.user_attrs["record"]["metrics"] for t in done]
        left = list(range(len(done)))
        while left:
            rank = [
                left[i] for i in pareto.non_dominated([points[j] for j in left], self.objectives)
            ]
            fresh = [
                i for i in rank if done[i].number not in promoted and done[i].params not in taken
            ]
            if fresh:
                return done[max(fresh, key=lambda i: self._contribution(i, rank, points))]
            left = [i for i in left if i not in rank]
        return None

    def _contribution(self, i: int, rank: list[int], points: list[dict]) -> float:
        """Exclusive hypervolume of point i within its rank, normalised by the base model (0 when
        the base lacks a metric)."""
        base = self.setup.base_metrics
        try:
            whole = pareto.hypervolume(
                [points[j] for j in rank], self.objectives, normalise_by=base
            )
            rest = pareto.hypervolume(
                [points[j] for j in rank if j != i], self.objectives, normalise_by=base
            )
        except ConfigError:
            return 0.0
        return whole - rest


def screen_stats(study: optuna.Study) -> dict[str, float] | None:
    """{"configs_screened", "configs_promoted", "screen_s"} of `study`'s screening study, or None
    when it has none."""
    name = screen_study_name(study.study_name)
    storage = storage_of(study)
    if storage is None or not study_exists(storage, name):  # a study prunetune did not open
        return None
    trials = [t for t in load(storage, name).get_trials(deepcopy=False) if t.state.is_finished()]
    promoted = {
        t.user_attrs["screened_from"]
        for t in study.get_trials(deepcopy=False)
        if "screened_from" in t.user_attrs
    }
    return {
        "configs_screened": len(trials),
        "configs_promoted": len(promoted),
        "screen_s": sum(
            t.user_attrs.get("record", {}).get("timings", {}).get("total_s", 0.0) for t in trials
        ),
    }
