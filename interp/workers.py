"""Dataset-wide work in shards: in this process or on Ray workers, written shard by shard, resumable.

    results = run_shards(task, items, shard_size=8)                    # in this process: the reference
    results = run_shards(task, items, shard_size=8, workers=2)         # a local Ray cluster, 2 workers
    results = run_shards(task, items, shard_size=8, address="auto")    # join a running one (`ray start --head`)
    results = run_shards(task, items, shard_size=8, workers=2, out="run.jsonl", resume=True)

`items` are JSON-ready (strings, numbers, lists, dicts), cut into shards of `shard_size` in order.
A task is a picklable object with three methods:

- `setup()`: load what every shard needs (the model, transcoders): once per worker, and again
  in a worker that replaces one that died;
- `__call__(shard) -> list`: one JSON-ready result per item of the shard, in order;
- `describe() -> dict`: JSON, everything the results depend on (the model's `weights_hash`,
  the options), so a results file from another task or configuration is refused.

`run_shards` returns the results of all items in item order, the same list whatever the worker
count: each item's result depends only on the item and the task, and a caller that sums them
adds them in item order (in float64). Results come back as the file gives them (JSON: tuples
become lists), resumed or not. With `out`, each finished shard is appended to a JSON
lines file as one line (`{"shard": i, "results": [...]}`, written with one write and flushed to
disk) after a header line with the fingerprint; a line cut short by a crash is ignored, and
`resume=True` skips the shards the file holds. A worker process that dies in the middle of a
shard (killed, out of memory, its node lost) is replaced by a new one, which runs `setup()` and
redoes the shard from its start; a shard's result is taken and written once, when it arrives
whole, so nothing is lost or counted twice. An exception raised by the task stops the run (the
shards finished so far stay in the file). A task with `gpus_per_worker = 1` gets a GPU per worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

from interp.progress import progress_bar

FORMAT = "interp shards v1"
PER_WORKER_IN_FLIGHT = 2  # shards queued on each worker: the next one is ready when a shard ends
# Set here, they hold in the workers too: the key-statistics cache (so workers read what this
# process computed), offline hubs, thread counts.
PASSED_ENV = ("INTERP_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_VERBOSITY", "OMP_NUM_THREADS",
              "RAY_worker_niceness")


@runtime_checkable
class ShardTask(Protocol):
    def setup(self) -> None:
        """Load what the shards need; runs once in each worker (again in a replacement)."""

    def __call__(self, shard: list) -> list:
        """One JSON-ready result per item of `shard`, in order."""

    def describe(self) -> dict:
        """JSON: everything the results depend on."""


def shards_of(items: Sequence, shard_size: int) -> list[list]:
    """`items` cut in order into shards of `shard_size` (the last may be shorter)."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    return [list(items[i: i + shard_size]) for i in range(0, len(items), shard_size)]


def fingerprint(task: ShardTask, items: Sequence, shard_size: int) -> dict:
    """The header of a results file: the task's class and description, the items' hash, the shards."""
    try:
        described = json.loads(json.dumps(task.describe(), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{type(task).__name__}.describe() must return JSON-ready data: {e}") from None
    try:
        items_json = json.dumps(list(items), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError(f"items must be JSON-ready (strings, numbers, lists, dicts): {e}") from None
    return {"format": FORMAT, "task": f"{type(task).__module__}.{type(task).__qualname__}", "describe": described,
            "n_items": len(items), "shard_size": shard_size,
            "items_sha256": hashlib.sha256(items_json.encode()).hexdigest()[:24]}


def read_results(path: Union[str, Path], header: Optional[dict] = None) -> tuple[dict, dict[int, list], int]:
    """(header, {shard: results}, bytes of complete lines) of a results file. A last line without its
    newline (cut by a crash) is left out; with `header`, a file written for another one is refused."""
    path = Path(path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a half-written line
    lines = data[:end].splitlines()
    if not lines:
        raise ValueError(f"{path} holds no header line: not a results file of run_shards")
    try:
        found = json.loads(lines[0])
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise ValueError(f"{path} is not a results file of run_shards (its first line is no {FORMAT!r} header)")
    if header is not None and found != header:
        differ = sorted(k for k in set(header) | set(found) if header.get(k) != found.get(k))
        raise ValueError(f"{path} was written for another task or configuration ({', '.join(differ)} differ: "
                         f"{_diff(header, found)}); it is not reused: choose another output, or remove the file "
                         "to start again")
    done: dict[int, list] = {}
    n_shards = -(-found["n_items"] // found["shard_size"])
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
            shard, results = record["shard"], record["results"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}, line {number}: not a shard record (the file is damaged)") from None
        if not (isinstance(shard, int) and 0 <= shard < n_shards and isinstance(results, list)):
            raise ValueError(f"{path}, line {number}: shard {shard!r} is not one of this run's {n_shards} shards")
        done.setdefault(shard, results)  # a shard is written once; a copy would hold the same results
    return found, done, end


def _diff(want: dict, found: dict) -> str:
    parts = []
    for key in sorted(set(want) | set(found)):
        a, b = want.get(key), found.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts.append(_diff(a, b))
        else:
            parts.append(f"{key}: file {b!r}, this run {a!r}")
    return "; ".join(parts)


class _ResultsFile:
    """Appends one line per finished shard, after the header; each line in one write, flushed to disk."""

    def __init__(self, path: Path, header: dict, resume: bool) -> None:
        self.path = path
        self.done: dict[int, list] = {}
        if resume and path.exists() and b"\n" in path.read_bytes():  # (no whole line: cut before its header)
            _, self.done, end = read_results(path, header)
            self.handle = open(path, "r+b")
            self.handle.truncate(end)  # drop a half-written last line
            self.handle.seek(end)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(path, "wb")
            self._write(header)

    def _write(self, record: dict) -> None:
        self.handle.write((_json(record) + "\n").encode())
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def add(self, shard: int, results: list) -> None:
        self._write({"shard": shard, "results": results})


    def close(self) -> None:
        self.handle.close()


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def run_shards(task: ShardTask, items: Sequence, *, shard_size: int, workers: Optional[int] = None,
               address: Optional[str] = None, out: Optional[Union[str, Path]] = None, resume: bool = False,
               progress: bool = True, desc: str = "shards", retries: int = 3) -> list:
    """The results of `task` on every item, in item order (see the module docstring).

    workers: None or 0 runs the shards here, one after the other; N > 0 starts a local Ray cluster
    of N worker processes (one CPU each) unless Ray is already running in this process, then uses
    it; `address` joins an existing cluster (`ray start --head` prints it; "auto" finds a local
    one) with `workers` workers (default: one per CPU of the cluster). out: the JSON lines file the
    shards are written to as they finish; resume: keep the shards it already holds (a file of
    another task, configuration or item list is refused). retries: how many dead workers are
    replaced (their shards redone) before the run stops."""
    items = list(items)
    shards = shards_of(items, shard_size)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be None or a non-negative integer, got {workers!r}")
    if resume and out is None:
        raise ValueError("resume=True needs out=: the results file to resume from")
    if not isinstance(task, ShardTask):
        raise TypeError(f"task must have setup(), __call__(shard) and describe(); {type(task).__name__} has not")
    header = fingerprint(task, items, shard_size)
    file = _ResultsFile(Path(out), header, resume) if out is not None else None
    done: dict[int, list] = dict(file.done) if file else {}
    if file is not None:
        print(f"shard results in {file.path} ({len(done)} of {len(shards)} shards there already)"
              if resume else f"shard results in {file.path}")

    def finished(i: int, results: Any) -> None:
        if not isinstance(results, list) or len(results) != len(shards[i]):
            raise ValueError(f"the task returned {type(results).__name__} for shard {i}; it must return a list of "
                             f"one result per item ({len(shards[i])})")
        try:  # as the file gives them back (tuples become lists), so a resumed run returns the same
            results = json.loads(_json(results))
        except (TypeError, ValueError) as e:
            raise TypeError(f"the task's results for shard {i} are not JSON-ready: {e}") from None
        if file is not None:
            file.add(i, results)
        done[i] = results
        bar.update(1)

    todo = [i for i in range(len(shards)) if i not in done]
    try:
        with progress_bar(total=len(shards), initial=len(shards) - len(todo), progress=progress, desc=desc,
                          unit="shard") as bar:
            if todo and not workers and address is None:
                task.setup()
                for i in todo:
                    finished(i, task(shards[i]))
            elif todo:
                with _ray(workers, address):
                    _dispatch(task, shards, todo, workers or None, retries, finished)
    finally:
        if file is not None:
            file.close()
    return [r for i in range(len(shards)) for r in done[i]]


class ModelTask:
    """A base for tasks on a model. It carries the model's name (each worker loads it once, in
    `setup()`, with `models.load`, onto the device a name with a `.device` asks for: a GPU per
    worker for CUDA) or, for a model given as an object, the model itself (pickled to the workers);
    `describe()` holds the model's `weights_hash`, so results of other weights are refused.
    `loaded`: the model already loaded under that name here (used in this process, never sent).
    A subclass adds its options to `describe()`, makes what its shards share in `setup()` (after
    `super().setup()`, in attributes named _..., which are not sent) and reads `self.model`."""

    def __init__(self, model: Any, dtype: Optional[str] = None, *, loaded: Any = None) -> None:
        from interp.fingerprint import weights_hash

        named = isinstance(model, (str, Path))
        self.name, self.dtype = (str(model), dtype) if named else (None, None)
        self.device = getattr(model, "device", None) if named else None
        self._model = loaded if named else model
        if self._model is None:
            self.setup()
        where = next(self._model.parameters()).device
        self.gpus_per_worker = 1 if where.type == "cuda" else 0  # read by run_shards
        self.model_hash, self.where = weights_hash(self._model), where.type

    def setup(self) -> None:
        if self._model is None:
            from models import load

            model = load(self.name, dtype=self.dtype).eval()
            self._model = model.to(self.device) if self.device is not None else model

    @property
    def model(self) -> Any:
        if self._model is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run: the model is not loaded yet")
        return self._model

    def describe(self) -> dict:
        return {"model": self.name or "a model object", "model_hash": self.model_hash, "device": self.where}

    def __getstate__(self) -> dict:
        """What is sent to a worker: the options, not what `setup()` makes (attributes named _...),
        and the model itself only when it has no name to be loaded by."""
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state["_model"] = None if self.name is not None else self._model
        return state


class _Worker:
    """A Ray actor (one process, one CPU) that runs shards of whichever task it is sent; it sets a
    task up (`setup()`) the first time it sees it, so a replacement sets up on its first shard."""

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.key, self.task = None, None

    def run(self, boxed: list, shard: list) -> list:
        import ray

        key = boxed[0].hex()
        if key != self.key:
            self.key, self.task = None, ray.get(boxed[0])  # the task, put once in the object store
            self.task.setup()
            self.key = key
        return self.task(shard)


_pool: dict[int, list] = {}  # GPUs per worker -> workers kept for the next run_shards inside ray_cluster
_blocks = [0]  # open ray_cluster blocks


@contextmanager
def ray_cluster(workers: Optional[int] = None, address: Optional[str] = None) -> Iterator[None]:
    """Ray running in this process for the block: as it is if it already runs, else a local
    cluster of `workers` CPUs, or the cluster at `address` (nothing for neither); what the block
    started, it shuts down. The `run_shards` calls inside share the cluster and its worker
    processes (each sets up each new task once)."""
    _blocks[0] += 1
    try:
        with _ray(workers, address):
            yield
    finally:
        _blocks[0] -= 1
        if not _blocks[0]:
            _release_workers()


@contextmanager
def _ray(workers: Optional[int], address: Optional[str]) -> Iterator[None]:
    if not workers and address is None:
        yield
        return
    import logging

    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError("workers and address need Ray: pip install 'interp-toolkit[ray]' "
                                  "(or leave --workers / --address out to run in one process)") from None
    if ray.is_initialized():
        yield
        return
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    # Ray starts its workers at niceness 15 (below every other process): on a shared machine they
    # got almost no CPU beside one busy job. At 0 they share the cores as this process does.
    env.setdefault("RAY_worker_niceness", "0")
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": env})
    if address is not None:
        ray.init(address=address, **quiet)
    else:
        # address="local": a cluster of our own, even where another one runs on this machine
        ray.init(address="local", num_cpus=workers, object_store_memory=100 * 1024 ** 2, **quiet)
    try:
        yield
    finally:
        _release_workers()
        ray.shutdown()


def _release_workers() -> None:
    import sys

    ray = sys.modules.get("ray")
    for actors in _pool.values():
        for actor in actors:
            if ray is not None and ray.is_initialized():
                ray.kill(actor, no_restart=True)
    _pool.clear()


def _dispatch(task: ShardTask, shards: list[list], todo: list[int], workers: Optional[int], retries: int,
              finished: Callable[[int, Any], None]) -> None:
    """Keep PER_WORKER_IN_FLIGHT shards queued on each worker; a worker that dies is replaced by a new
    one (which runs `setup()`), and its unfinished shards go to the replacement."""
    import ray

    gpus = getattr(task, "gpus_per_worker", 0)
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(_Worker)
    # in a list, so that Ray passes the reference rather than the task: one copy in the object store
    boxed = [ray.put(task)]
    n = min(workers or max(1, int(ray.cluster_resources().get("CPU", 1))), len(todo))
    keep = _blocks[0] > 0  # inside ray_cluster: the workers stay for the next run
    pool = _pool.setdefault(gpus, []) if keep else []
    pool += [remote.remote(1) for _ in range(n - len(pool))]
    queue, pending, deaths = deque(todo), {}, 0

    def submit(slot: int, i: Optional[int] = None) -> None:
        if i is None and queue:
            i = queue.popleft()
        if i is not None:
            pending[pool[slot].run.remote(boxed, shards[i])] = (i, slot, pool[slot])

    try:
        for _ in range(PER_WORKER_IN_FLIGHT):
            for slot in range(n):
                submit(slot)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i, slot, actor = pending.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayActorError as e:  # the worker died (killed, out of memory, lost node)
                if e.actor_init_failed:
                    raise RuntimeError(f"a worker could not start: {e}") from None
                if pool[slot] is actor:  # the first of its shards to tell: replace it
                    deaths += 1
                    if deaths > retries:
                        raise RuntimeError(f"shard {i}: workers died {deaths} times (retries={retries}); the shards "
                                           "finished so far are kept (resume to go on)") from e
                    ray.kill(actor, no_restart=True)
                    pool[slot] = remote.remote(1)
                submit(slot, i)  # redone from the start on the replacement
                continue
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                if hasattr(cause, "add_note"):  # Python 3.11+
                    cause.add_note(f"(in shard {i}: items {shards[i][:3]}{' ...' if len(shards[i]) > 3 else ''})")
                raise cause from None
            finished(i, results)
            submit(slot)
    except BaseException:
        if keep:  # a worker may still be busy with an abandoned shard: start afresh next time
            _release_workers()
        raise
    finally:
        if not keep:
            for actor in pool:
                ray.kill(actor, no_restart=True)


__all__ = ["ShardTask", "ModelTask", "ray_cluster", "run_shards", "shards_of", "fingerprint", "read_results"]
