"""The `targets` strategy's planner: the front built target by target (the default search).

Before each full trial the runner calls `TargetPlanner.refill` (the same place screening refills).
When no full trial is waiting, the planner picks the next step of its plan and enqueues one full
trial whose params it chose (prunetune.spaces.targets.TargetSpace: every config at a target costs
that target's MACs within the tolerance, by construction):

1. **Baselines first, at every target**: the uniform config, then torch-pruning's global ranking
   scaled onto the target. So the front weakly dominates both, and every target has a "vs
   uniform" reference measured through the same pipeline.
2. **Then searched candidates, target after target** (the target with the fewest so far, the
   cheapest first): the
   target's *candidate study* (`<study>.target-<t>`, same storage, TPE over allocations, bits and
   importance) proposes `cfg.plan.candidates` allocations; each is scored with the cheap proxy
   (`objective.screen_trial`: a short fine-tune, batch norms re-estimated, part of the validation
   split); the best not yet promoted becomes the full trial. A new target's candidate study
   starts from the best allocations found at the nearest target searched before it (what is
   learned is shared).

With the default targets, the plan follows accuracy: once every planned baseline has finished, a
target is added where the front drops steeply (prunetune.search.target_refine: at most
MAX_REFINED per search, listed in the full study's user attr `refined_targets`), its baselines
first as at every target, except the global ranking's: an added target is there to fill the front
between two others, where uniform's config is the reference, so the global ranking waits until every
other target has had a searched candidate (as where uniform scored near chance).

Baselines are planned without any scoring (the first full trial starts as soon as the base is
ready). Their proxy scores come when their target is first searched: they are the first candidates
of the target's candidate study (user attr `baseline`; anchors for its sampler, never promoted),
and each score is kept in the full study's user attr `target_report.baseline_proxy_key(...)`. So
`proxy_quality` can say how well the proxy ranks: the Spearman correlation of proxy and brief
fine-tune accuracy within each target, averaged over targets, weighted by pairs.

Full trials carry user attrs `target`, `candidate` ("uniform", "global" or "search") and, for
searched ones, `proxy` and `screened_from` (the candidate trial's number). Only full trials live in
the full study, so only they reach the front.
"""

from __future__ import annotations

import warnings

import optuna

from prunetune import interrupts
from prunetune.search.objective import SearchSetup, screen_trial
from prunetune.search.records import COMPLETE
from prunetune.search.study import budget_lock, count_finished, enqueue, make_storage
from prunetune.search.target_refine import (
    MAX_REFINED,
    REFINED_KEY,
    near_chance_targets,
    pick_frontier,
    refinement,
)
from prunetune.search.target_report import baseline_proxy_key, candidate_study_name, target_rows
from prunetune.spaces.targets import ALLOC, TargetSpace

BASELINES = ("uniform", "global")
SHARED = 2  # a new target's candidate study starts from this many of the best allocations before it
GLOBAL_STEPS = 7  # bisection steps on torch-pruning's global ratio (then the exact scalar solve)


class TargetPlanner:
    """Plans the full trials of a `targets` search (see the module docstring)."""

    def __init__(self, setup: SearchSetup, study: optuna.Study) -> None:
        self.setup, self.study = setup, study
        self.space: TargetSpace = setup.space
        self.storage = make_storage(setup.config.stores.storage_url)
        self._studies: dict[float, optuna.Study] = {}
        self._global: dict[float, dict[str, float]] = {}
        self._barren: set[float] = set()  # targets where no scored candidate could be promoted

    # -- the plan ---------------------------------------------------------------------------------
    def _full_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Full trials that count for the plan (an interrupted trial is re-run, not re-planned)."""
        return [
            t
            for t in self.study.get_trials(deepcopy=False)
            if "candidate" in t.user_attrs
            and not t.user_attrs.get("interrupted")
            and t.user_attrs.get("replay_of") is None
        ]

    def targets(self) -> list[float]:
        """The plan's targets, lightest first: the space's and those added where the front drops
        steeply (see the module docstring)."""
        added = self.study.user_attrs.get(REFINED_KEY, [])
        return sorted({*self.space.targets, *map(float, added)}, reverse=True)

    def _index(self, target: float) -> int:
        """A stable number of `target` (seeds its candidate study): its place in the space's
        targets, then in the order targets were added."""
        if target in self.space.targets:
            return self.space.targets.index(target)
        added = [float(t) for t in self.study.user_attrs.get(REFINED_KEY, [])]
        return len(self.space.targets) + (added.index(target) if target in added else len(added))

    def next_step(self) -> tuple[float, str] | None:
        """(target, "uniform" | "global" | "search"): baselines at every target first, lightest
        target first, except the global ranking where uniform scored near chance
        (`near_chance_targets`) and at targets added where the front drops steeply: there it
        waits until every other target has had a searched candidate; then, with the default
        targets, a target added where the front drops steeply (its uniform config first); then
        searched candidates: half of them at the target where the default pick is decided
        (`pick_frontier`), the others at the target with the fewest so far: a target whose best
        is near chance last (the brief fine-tune cannot rank configs there), an added target
        first (the front is steepest there: a better config buys the most hypervolume), else the
        cheapest first (where allocations matter most: MetaPruning's gain over uniform is largest
        at the cheapest budgets), skipping targets where no candidate could be promoted. None:
        nothing is left to propose."""
        full = self._full_trials()
        done = [(float(t.user_attrs["target"]), t.user_attrs["candidate"]) for t in full]
        targets = self.targets()
        best = {r["target"]: r["best"] for r in target_rows(self.study) if r["best"] is not None}
        near = near_chance_targets(best, self._base(), self.setup.workload.num_classes)
        waits = near | set(targets).difference(self.space.targets)  # for the global ranking
        for kind in BASELINES:
            for target in targets:
                if (target, kind) not in done and (kind == "uniform" or target not in waits):
                    return target, kind
        baselines_running = any(
            not t.state.is_finished() for t in full if t.user_attrs["candidate"] in BASELINES
        )
        added = None if baselines_running else self._refine(targets, best)
        if added is not None:
            return added, BASELINES[0]
        return self._search_step(done, targets, near, best)

    def _base(self) -> float | None:
        """The base model's validation accuracy (None: not measured)."""
        return self.setup.base_metrics.get("accuracy")

    def _search_step(
        self, done: list, targets: list[float], near: set[float], best: dict[float, float]
    ) -> tuple[float, str] | None:
        """The step after the first baselines (see `next_step`)."""
        open_targets = [t for t in targets if t not in self._barren]
        searched = {t: sum(1 for d in done if d == (t, "search")) for t in open_targets}
        waiting = [t for t in targets if (t, "global") not in done]  # deferred
        if waiting and all(searched[t] for t in open_targets if t not in near):
            return waiting[0], "global"
        if not open_targets:
            return None
        selection = self.setup.config.selection
        frontier = (
            None
            if selection.select is not None  # a --select rule picks, not the default pick
            else pick_frontier(best, open_targets, self._base(), selection.max_drop)
        )
        if frontier is not None and 2 * searched[frontier] <= sum(searched.values()):
            return frontier, "search"
        planned = self.space.targets  # targets added where the front is steep come first
        return min(open_targets, key=lambda t: (searched[t], t in near, t in planned, t)), "search"

    def refill(self, deadline) -> bool:
        """Make sure the full study has a trial waiting (see the module docstring). False when the
        search should stop: `deadline` passed while candidates were scored, or no target has a
        candidate left to promote (every allocation misses its target: channels too coarse).
        A step another search on the same study planned while this one scored it (two processes
        sharing a study) is dropped, and the next step planned: no config is run twice."""
        while not self._waiting():
            proposal = self._propose(deadline)
            if proposal is None:
                return False
            target, kind, params, attrs = proposal
            with budget_lock(self.study):  # no trial left waiting past the budget, nor two at once
                if self._planned(target, kind, attrs.get("screened_from")):
                    continue
                finished, running = count_finished(self.study)
                if finished + running < self.setup.config.budget.trials and not self._waiting():
                    enqueue(self.study, params, target=target, candidate=kind, **attrs)
                return True
        return True

    def _propose(self, deadline) -> tuple[float, str, dict, dict] | None:
        """(target, kind, params, attrs) of the next step whose proposal could be made; None when
        nothing is left or the deadline passed."""
        while True:
            step = self.next_step()
            if step is None or deadline.passed():
                return None
            target, kind = step
            proposal = (
                self._baseline(target, kind)
                if kind in BASELINES
                else self._searched(target, deadline)
            )
            if proposal is not None:
                return target, kind, *proposal
            if not deadline.passed():
                self._barren.add(target)

    def _planned(self, target: float, kind: str, screened_from: int | None) -> bool:
        """Whether the full study already has this step: the baseline `kind` at `target`, or the
        searched candidate `screened_from` (in any state: waiting, running or finished)."""
        return any(
            float(t.user_attrs["target"]) == target
            and t.user_attrs["candidate"] == kind
            and (kind in BASELINES or t.user_attrs.get("screened_from") == screened_from)
            for t in self._full_trials()
        )

    def _refine(self, targets: list[float], best: dict[float, float]) -> float | None:
        """The target added to the plan now, every planned baseline having finished (stored in
        the study's REFINED_KEY), or None: targets the user gave, MAX_REFINED added already, or
        no gap steep enough (prunetune.search.target_refine.refinement)."""
        added = list(self.study.user_attrs.get(REFINED_KEY, []))
        base = self._base()
        if self.setup.config.plan.targets is not None or len(added) >= MAX_REFINED or not base:
            return None
        mine = {t: a for t, a in best.items() if t in targets}
        target = refinement(mine, float(base), self.space.bounds()[1])
        if target is not None:
            self.study.set_user_attr(REFINED_KEY, [*added, target])
        return target

    def _waiting(self) -> bool:
        waiting = optuna.trial.TrialState.WAITING
        return any(t.state == waiting for t in self.study.get_trials(deepcopy=False))

    # -- baselines --------------------------------------------------------------------------------
    def _baseline(self, target: float, kind: str) -> tuple[dict, dict]:
        """The uniform or global-ranking config at `target` (its proxy is scored later, see the
        module docstring). When its shape cannot meet the target within the tolerance (channels
        too coarse for the window), the config of that shape nearest below the target, marked
        `below_tolerance`."""
        return self._baseline_params(self._baseline_candidate(target, kind), target)

    def _baseline_params(self, candidate: dict, target: float) -> tuple[dict, dict]:
        """(full-trial params, attrs) of a baseline's `candidate` at `target`: on the target, or
        when its shape cannot meet it, the closest config below it with `below_tolerance`."""
        params = self.space.candidate_params(candidate, target)
        if params is None:
            return self._closest(candidate, target), {"below_tolerance": True}
        return params, {}

    def _baseline_candidate(self, target: float, kind: str) -> dict:
        """The uniform (every allocation 0) or global-ranking candidate at `target`, widest bits,
        first importance."""
        alloc = {d: 0.0 for d in self.space.dims()}
        if kind == "global":
            alloc = self.space.allocation_of(self._global_ratios(target))
        candidate = {ALLOC + d: a for d, a in alloc.items()}
        candidate |= {f"bits:{d}": self.space.inner.bits[0] for d in self.space.inner.bits_dims()}
        if len(self.space.inner.importance) > 1:
            candidate["importance"] = self.space.inner.importance[0]
        return candidate

    def _closest(self, candidate: dict, target: float) -> dict:
        """Full-trial params of `candidate` at the lowest target below `target` it can meet."""
        for shrink in range(1, 40):
            params = self.space.candidate_params(candidate, target * (1 - 0.02) ** shrink)
            if params is not None:
                return params | {"target": target}
        raise RuntimeError(f"no config of this shape meets {target:g} of the base's MACs")

    def _global_ratios(self, target: float) -> dict[str, float]:
        """Per-dimension ratios of torch-pruning's global ranking whose MACs are closest to
        `target` (bisection on its global pruning ratio; computed once per target)."""
        from prunetune.search.strategies import global_ratios

        if target not in self._global:
            space, base = self.space, self.setup.base.model
            low, high, best = 0.0, 0.999, None
            for _ in range(GLOBAL_STEPS):
                mid = (low + high) / 2
                groups = global_ratios(base, self.setup.example_input(), space.inner, mid)
                dims = {
                    d: max(groups.get(m, 0.0) for m in members)
                    for d, (members, _, _) in space.dims().items()
                }
                if space.macs_fraction(dims) > target:
                    low = mid
                else:
                    high = mid
                best = dims
            self._global[target] = best
        return self._global[target]

    # -- searched candidates ----------------------------------------------------------------------
    def candidate_study(self, target: float) -> optuna.Study:
        """The candidate study of `target` (created on first use, seeded with the baselines at
        `target`, then the best allocations of the targets before it)."""
        if target not in self._studies:
            cfg = self.setup.config
            index = self._index(target)
            study = optuna.create_study(
                study_name=candidate_study_name(self.study.study_name, target),
                storage=self.storage,
                load_if_exists=True,
                direction="maximize",
                sampler=optuna.samplers.TPESampler(
                    seed=cfg.plan.seed + index, multivariate=True, n_startup_trials=8
                ),
            )
            if "screen_of" not in study.user_attrs:
                study.set_user_attr("screen_of", self.study.study_name)
                study.set_user_attr("target", target)
                for kind in BASELINES:
                    candidate = self._baseline_candidate(target, kind)
                    enqueue(study, candidate, skip_if_exists=True, baseline=kind)
                for params in self._best_before(target):
                    enqueue(study, params, skip_if_exists=True)
            self._studies[target] = study
        return self._studies[target]

    def _best_before(self, target: float) -> list[dict]:
        """The SHARED best candidates (by proxy) of the nearest target (cheaper first) whose
        candidate study has some; allocations are relative, so they transfer between targets."""
        targets = self.targets()
        index = targets.index(target)
        for distance in range(1, len(targets)):
            for i in (index + distance, index - distance):
                if 0 <= i < len(targets) and targets[i] in self._studies:
                    done = [
                        t
                        for t in self._studies[targets[i]].get_trials(deepcopy=False)
                        if t.state == optuna.trial.TrialState.COMPLETE
                    ]
                    if done:
                        return [t.params for t in sorted(done, key=lambda t: -t.value)[:SHARED]]
        return []

    def _searched(self, target: float, deadline) -> tuple[dict, dict] | None:
        """Score the baselines still waiting in `target`'s candidate study (the first time it is
        searched) and `cfg.plan.candidates` new candidates, then return the best searched one not
        yet promoted (baselines are full trials already)."""
        study = self.candidate_study(target)
        waiting = optuna.trial.TrialState.WAITING
        baselines = sum(
            t.state == waiting and "baseline" in t.user_attrs
            for t in study.get_trials(deepcopy=False)
        )
        for _ in range(baselines + self.setup.config.plan.candidates):
            if deadline.passed():
                return None
            self._score_one(study, target)
        promoted = {
            int(t.user_attrs["screened_from"])
            for t in self._full_trials()
            if t.user_attrs.get("screened_from") is not None
            and float(t.user_attrs["target"]) == target
        }
        done = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE
            and t.number not in promoted
            and "baseline" not in t.user_attrs
        ]
        if not done:
            return None
        best = max(done, key=lambda t: t.value)
        params = self.space.candidate_params(best.params, target)
        return params, {"proxy": best.value, "screened_from": best.number}

    def _score_one(self, study: optuna.Study, target: float) -> None:
        """Ask `study` for one candidate, score it with the proxy, tell the result (a candidate
        that cannot meet the target is PRUNED; Ctrl-C fails it and propagates). A baseline is
        scored as its full trial is configured, and its score kept on the full study."""
        interrupts.check()
        trial = study.ask()
        baseline = trial.user_attrs.get("baseline")
        try:
            with warnings.catch_warnings():  # a global ranking's allocation may exceed [-1, 1]
                warnings.filterwarnings("ignore", "Fixed parameter .* out of range")
                candidate = self.space.suggest_candidate(trial)
            if baseline is None:
                params = self.space.candidate_params(candidate, target)
            else:  # scored as its full trial is configured
                params, _ = self._baseline_params(candidate, target)
            if params is None:
                trial.set_user_attr("reason", f"cannot meet {target:g} of the base's MACs")
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return
            record = screen_trial(
                self.setup, params, trial.number + 100_000 * (1 + self._index(target))
            )
        except KeyboardInterrupt:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        trial.set_user_attr(
            "record",
            {
                "state": record.state,
                "metrics": record.metrics,
                "reason": record.reason,
                "timings": record.timings,
            },
        )
        if record.state == COMPLETE:
            study.tell(trial, float(record.metrics["accuracy"]))
            if baseline is not None:
                key = baseline_proxy_key(baseline, target)
                self.study.set_user_attr(key, float(record.metrics["accuracy"]))
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
