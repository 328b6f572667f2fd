"""A tuned study in `oneshot benchmark`: each configuration's search (`oneshot.study.tune`) runs
first, resumably; when it completes its trials are written as a record
(`records/<study>/tune/<configuration>.json`), and the study's runs of that configuration become
its best trial's values at the study's own budget, seeds and test episodes.

A finished search is read back from its record alone, so tables and runs never need the storage
again. More workers: start more drivers (`oneshot benchmark`, same preset) against one storage
every node reaches (`--storage postgresql://...`); each takes queued trials until none is left.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from ..errors import OneshotError
from ..provenance import provenance
from .presets import Study
from .records import tune_path, write
from .tunespec import Search, apply, study_key

VERSION = 1


def optuna_name(st: Study, cfg: Config, search: Search) -> str:
    """The Optuna study of a configuration's search: `<study>/<configuration>/<digest of what it is>`."""
    return f"{st.name}/{search.configuration}/{study_key(cfg, st.tune, search)}"


def _untuned(st: Study) -> list[Search]:
    """The searches of a study whose best values its runs do not have yet."""
    return [s for s in (st.tune.searches if st.tune else ()) if s.configuration not in st.tuned]


def _first(st: Study, name: str) -> Config:
    return next(c for c in st.runs if c.name == name)


def finished_search(results: Path, st: Study, search: Search) -> dict | None:
    """The record of a search that completed with its planned trials for what it is now, else None."""
    path = tune_path(results, st.name, search.configuration)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (rec.get("optuna_study") == optuna_name(st, _first(st, search.configuration), search)
          and rec.get("planned") == search.trials and rec.get("best"))
    return rec if ok else None


def plan_searches(studies: list[Study], results: Path, rate) -> float:
    """Print the searches still to run (trials x trial budget, at `rate(cfg)` images/s; pruning
    only shortens them) and apply the finished ones; returns their estimated seconds."""
    total, lines = 0.0, []
    for st in studies:
        for search in _untuned(st):
            rec = finished_search(results, st, search)
            if rec is not None:
                use_best(st, search.configuration, rec)
                continue
            cfg = _first(st, search.configuration)
            images = st.tune.trial_steps(cfg) * cfg.batch_images
            t = search.trials * images / rate(cfg) * 1.1
            total += t
            lines.append(f"  search {st.name}/{search.configuration}: {search.trials} trials of {images} images "
                         f"({', '.join(d.key for d in search.dims)}), at most ~{t / 3600:.1f} h")
    if lines:
        print(f"searches: {len(lines)} to run, at most about {total / 3600:.1f} device-hours before pruning")
        print("\n".join(lines))
    return total


def open_stores(studies: list[Study], results: Path, storage: str | None, heartbeat: int) -> dict:
    """The storage of every study with a search to run (study name -> RDB storage), opened before
    anything else: a storage that does not answer stops the benchmark before any trial trains."""
    todo = [st for st in studies if any(finished_search(results, st, s) is None for s in _untuned(st))]
    if not todo:
        return {}  # every search has its record: no Optuna, no storage
    try:
        from . import tune
    except ImportError as e:
        raise OneshotError(f"a preset with [study.tune] needs Optuna ({e}): pip install 'oneshot[tune]' "
                           "(or make install)") from None
    return {st.name: tune.open_storage(storage or tune.default_storage(results, st.name), heartbeat) for st in todo}


def run_searches(studies: list[Study], stores: dict, results: Path, runs_dir: Path, data_root, opts) -> None:
    """Run (or continue) every unfinished search of the studies in its study's storage
    (`open_stores`): here, one trial after another (`--executor local`), or on `opts.executor`'s
    workers, each taking queued trials; write each one's record when it completes (here: before the
    next search begins) and apply its best trial to the study's runs."""
    pending = [(st, s) for st in studies for s in _untuned(st) if finished_search(results, st, s) is None]
    if not pending:
        return
    from . import tune
    from .executors import execute
    from .options import workers

    jobs = []
    for st, search in pending:
        cfg = _first(st, search.configuration)
        study = tune.load(stores[st.name], optuna_name(st, cfg, search), st.tune)
        queued = tune.prepare(study, search.trials, Path(results) / "tuning" / f"{st.name}.lock")
        print(f"search {study.study_name}: {search.trials} trials planned, {queued} queued now", flush=True)
        if opts.executor == "local":
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(opts.cpus or threads)  # threads per run, as the runs get them
            try:
                tune.work(study, cfg, st.tune, search, runs_dir / st.name / search.configuration / "tune",
                          data_root, opts.heartbeat)
                _finish(tune, stores[st.name], results, st, search)  # now (a later search may be stopped), with
            finally:                                                  # the threads its trials had in its record
                torch.set_num_threads(threads)
        else:
            jobs += [(st, cfg)] * min(search.trials, workers(opts, search.trials))
    if jobs:
        task = worker_task({name: store.url for name, store in stores.items()}, opts.heartbeat)
        _, _, failed = execute(jobs, opts, results, runs_dir, data_root, progress=False, task=task)
        for name, reason in failed:
            print(f"a search worker of {name} failed: {reason}", flush=True)
    if opts.executor != "local":
        for st, search in pending:
            _finish(tune, stores[st.name], results, st, search)


def worker_task(urls: dict[str, str], heartbeat: int):
    """The job a Ray task or Slurm array task runs for a search (the executors' `job` arguments):
    one worker on the search of configuration `cfg.name` of study `st`, in `urls[st.name]`."""

    def search_worker(st, cfg, results, runs_dir, data_root, note: str, threads: int | None) -> str:
        import torch

        from . import tune
        from .executors import check_shared

        for folder in (results, runs_dir):
            check_shared(Path(folder), note)
        if threads:
            torch.set_num_threads(threads)
        search = st.tune.search(cfg.name)
        study = tune.load(tune.open_storage(urls[st.name], heartbeat), optuna_name(st, cfg, search), st.tune)
        tune.work(study, cfg, st.tune, search, Path(runs_dir) / st.name / cfg.name / "tune", data_root, heartbeat)
        return "trained"

    return search_worker


def _finish(tune, storage, results: Path, st: Study, search: Search) -> None:
    """A search whose workers are done: its record written and its best trial applied, or an
    OneshotError when it has fewer finished trials than planned."""
    name = optuna_name(st, _first(st, search.configuration), search)
    study = tune.load(storage, name, st.tune)
    c = tune.counts(study)
    done = sum(c.get(s, 0) for s in ("COMPLETE", "PRUNED"))
    if done < search.trials:
        raise OneshotError(f"search {name}: {done} of {search.trials} trials finished ({c}); trials whose workers "
                           "died were retried and failed again: run the same command to queue new ones")
    rec = search_record(study, st, search, name)
    write(tune_path(results, st.name, search.configuration), rec)
    print(f"search {name}: done ({c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} "
          f"failed); best validation accuracy {100 * rec['best']['value']:.2f} % with {rec['best']['params']}",
          flush=True)
    use_best(st, search.configuration, rec)


def search_record(study, st: Study, search: Search, name: str) -> dict:
    """What a completed search found: every trial (number, state, values, validation curve) and
    the best complete one (ties: the earliest)."""
    trials = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        row = {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
               "curve": t.user_attrs.get("curve", [])}
        for key, attr in (("stopped", "stopped"), ("train_s", "train_s")):
            if attr in t.user_attrs:
                row[key] = t.user_attrs[attr]
        if "failed_trial" in t.system_attrs:
            row["retry_of"] = t.system_attrs["failed_trial"]
        if t.datetime_start and t.datetime_complete:
            row["wall_s"] = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        trials.append(row)
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    if not complete:
        raise OneshotError(f"search {name}: every trial was pruned or failed; nothing to choose from")
    best = max(complete, key=lambda t: (t["value"], -t["number"]))
    return {"version": VERSION, "study": st.name, "configuration": search.configuration, "optuna_study": name,
            "planned": search.trials, "spec": st.tune.describe(),
            "space": [{k: v for k, v in d.__dict__.items() if v is not None and v is not False and v != ()}
                      for d in search.dims],
            "direction": "maximize", "trials": trials,
            "best": {"number": best["number"], "value": best["value"], "params": best["params"]},
            "search_wall_s": round(sum(t.get("wall_s", 0.0) for t in trials), 1),  # every trial's, one after another
            **provenance(_first(st, search.configuration).device)}


def use_best(st: Study, configuration: str, rec: dict) -> None:
    """The study's runs of `configuration` at its search's best trial's values (same name, seeds
    and budget); what the search was goes into `st.tuned` for their records."""
    params = rec["best"]["params"]
    st.runs = [apply(c, params) if c.name == configuration else c for c in st.runs]
    states = [t["state"] for t in rec["trials"]]
    st.tuned[configuration] = {
        "trials": rec["planned"], "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"), "params": params, "best_trial": rec["best"]["number"],
        "best_val_acc": rec["best"]["value"], "optuna_study": rec["optuna_study"]}
    if rec["study"] != st.name:  # values found by another study's search (`tuned_in`)
        st.tuned[configuration]["searched_in"] = rec["study"]
    if st.base:  # the study of the same losses untuned: the tables pair the tuned runs against it
        st.tuned[configuration]["base_study"] = st.base


def use_found(studies: list[Study], results: Path) -> None:
    """Every study with `tuned_in`: each configuration at the best values the searches of that
    study found (their records in `results`); a configuration without one is an OneshotError
    before anything trains."""
    for st in studies:
        if not st.tuned_in:
            continue
        found, missing = {}, []
        for name in st.configurations:
            try:
                rec = json.loads(tune_path(results, st.tuned_in, name).read_text())
            except (OSError, ValueError):
                rec = {}
            if isinstance(rec.get("best"), dict) and "params" in rec["best"]:
                found[name] = rec
            else:
                missing.append(name)
        if missing:
            raise OneshotError(f"study {st.name} takes its values from the searches of {st.tuned_in} (tuned_in), "
                               f"which have no finished record of {', '.join(missing)} under "
                               f"{Path(results) / 'records' / st.tuned_in / 'tune'}: run the preset with those "
                               "searches first, into the same results folder")
        for name, rec in found.items():
            use_best(st, name, rec)
