"""The Optuna side of a tuned study: one Optuna study per (study, configuration) in an RDB storage
(a SQLite file, or a server such as PostgreSQL that every worker reaches), its planned trials
queued once (`prepare`), and workers that take queued trials until none is left (`work`).

A trial trains the configuration with the values TPE samples, at the trial budget, on the
training split; every validation point goes to the pruner, and its best validation accuracy is
its value (test is never seen). Trials are queued up front, so any number of workers, on any
executor or node, finish the planned number and no more. A worker that dies leaves its trial
RUNNING only until its heartbeat is older than the grace period: the next look of a live worker
fails it and queues it again, with the same values (`RetryHeartbeatStaleTrialCallback`).
Importing this module imports Optuna (the `tune` extra); `import oneshot` never does.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from filelock import FileLock
from optuna.trial import TrialState

from ..config import Config
from ..errors import OneshotError, TrainingError
from .tunespec import Search, TuneSpec, trial_config

HEARTBEAT_S = 60  # how often a worker says its trial is alive; stale after GRACE x this
GRACE = 3
MAX_RETRY = 3  # times a trial whose worker died is queued again
POLL_S = 2.0  # how often a worker without a queued trial looks again while others run theirs
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(results: Path, study: str) -> str:
    """The default storage of a study's searches: a SQLite file under the results folder."""
    return f"sqlite:///{(Path(results) / 'tuning' / f'{study}.sqlite3').resolve()}"


def shown(url: str) -> str:
    """A storage URL as messages show it (no password)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL sqlalchemy cannot parse is shown as given
        return url.split("@")[-1]


def open_storage(url: str, heartbeat: int = HEARTBEAT_S) -> optuna.storages.RDBStorage:
    """The RDB storage at `url`, with heartbeats and the retry of stale trials; a storage that
    does not answer is an OneshotError naming it."""
    kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        kwargs = {"connect_args": {"connect_timeout": 10}}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=GRACE * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except ImportError as e:
        raise OneshotError(f"storage {shown(url)}: its database driver is missing ({e}); "
                           "pip install 'oneshot[tune]'") from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy's errors for a URL, server or file that does not answer
        last = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise OneshotError(f"storage {shown(url)} does not answer: {last[0] if last else type(e).__name__}") from None


class PerTrialTPE(optuna.samplers.BaseSampler):
    """Optuna's TPE, seeded anew for every trial from the study's seed and the trial's number, so
    a trial samples the same values from the same history however many workers or restarts ran."""

    def __init__(self, seed: int, startup_trials: int):
        self.seed, self.startup_trials = seed, startup_trials
        self._tpe = self._make(0)

    def _make(self, number: int) -> optuna.samplers.TPESampler:
        s = int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
        return optuna.samplers.TPESampler(seed=s, n_startup_trials=self.startup_trials)

    def before_trial(self, study, trial) -> None:
        self._tpe = self._make(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)


def pruner(spec: TuneSpec) -> optuna.pruners.BasePruner:
    """The spec's pruner: the median rule, successive halving, or none."""
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, spec.startup_trials or 1), n_warmup_steps=1)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def load(storage, name: str, spec: TuneSpec) -> optuna.Study:
    """The Optuna study `name` in `storage` (made when missing), maximising validation accuracy."""
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                               sampler=PerTrialTPE(spec.sampler_seed, spec.startup_trials), pruner=pruner(spec))


def counts(study: optuna.Study) -> dict[str, int]:
    """The study's trials by state name ("COMPLETE": 3, "PRUNED": 1, ...)."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def prepare(study: optuna.Study, planned: int, guard: Path) -> int:
    """Queue the trials the study still needs to reach `planned` finished ones (finished,
    running and queued trials count; a failed one does not). Under a file lock `guard`, so
    drivers started together queue them once. Returns the number queued now."""
    guard.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(guard)):
        optuna.storages.fail_stale_trials(study)
        c = counts(study)
        missing = planned - sum(c.get(s, 0) for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"))
        for _ in range(max(0, missing)):
            study.enqueue_trial({})
    return max(0, missing)


class _Heartbeat:
    """A thread that records the trial's heartbeat every `interval` seconds while it runs."""

    def __init__(self, storage, trial_id: int, interval: int):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self):
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _take(study: optuna.Study) -> int | None:
    """Claim the first queued trial (WAITING -> RUNNING); None when another worker took it first."""
    waiting = sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number)
    if not waiting:
        return None
    trial_id = waiting[0]._trial_id  # noqa: SLF001 - Optuna's own way from a frozen trial to its storage row
    try:
        return trial_id if study._storage.set_trial_state_values(trial_id, state=TrialState.RUNNING) else None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None


def work(study: optuna.Study, cfg: Config, spec: TuneSpec, search: Search, trial_root: Path, data_root=None,
         heartbeat: int = HEARTBEAT_S) -> int:
    """One worker: run queued trials until none is queued or running (a stale running trial is
    failed and queued again meanwhile). Returns the number of trials this worker ran."""
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
            return ran
        trial_id = _take(study)
        if trial_id is None:
            time.sleep(POLL_S)
            continue
        with _Heartbeat(study._storage, trial_id, heartbeat):
            run_trial(optuna.trial.Trial(study, trial_id), cfg, spec, search, trial_root, data_root)
        ran += 1


def run_trial(trial: optuna.trial.Trial, cfg: Config, spec: TuneSpec, search: Search, trial_root: Path,
              data_root=None) -> None:
    """Sample a trial's values, train it at the trial budget reporting each validation point to
    the pruner, and tell the study: COMPLETE with its best validation accuracy, or PRUNED (by the
    pruner, or a run that cannot go on: its reason in the user attribute "stopped")."""
    from ..train import train

    study = trial.study
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    params = {d.key: d.suggest(trial) for d in search.dims}
    run_dir = Path(trial_root) / f"trial{trial.number}"
    curve: list[list] = []
    pruned = [False]

    def on_validate(step: int, acc: float) -> bool:
        curve.append([step, acc])
        trial.report(acc, len(curve) - 1)
        pruned[0] = trial.should_prune()
        return pruned[0]

    try:
        tc = trial_config(cfg, spec, params, trial.number)
        shutil.rmtree(run_dir, ignore_errors=True)
        record = train(tc, run_dir, data_root, resume=False, progress=False, on_validate=on_validate).record
    except (TrainingError, OneshotError) as e:  # a loss that diverged, a combination of values no run can use
        trial.set_user_attr("stopped", str(e).splitlines()[0])
        record = None
    except BaseException:  # a bug or an interrupt: the trial failed, and the next driver queues another
        trial.set_user_attr("curve", curve)
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("curve", curve)
    shutil.rmtree(run_dir, ignore_errors=True)
    if record is None or pruned[0]:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("train_s", record["wall_time_s"])
        study.tell(trial, record["best_val_acc"])

