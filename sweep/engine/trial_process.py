"""Run trials in a child process per slot: its own device, a wall-clock timeout, and a crash, an
out-of-memory error or a hang that ends the trial with a reason instead of the sweep.

A slot's process serves one trial after another, so imports, base weights and tokenized data are
paid once per slot, not per trial; after any trial that ends without a result it is replaced by a
fresh one. It runs sweep.engine.train.run_trial and sends progress, evaluations and the result back over a
pipe; the parent answers each evaluation with "stop or go on" (the pruner's decision), so only the
parent ever talks to the study.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import glob
import hashlib
import importlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
import typing
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from pathlib import Path

from sweep.core.errors import SweepError
from sweep.core.signals import Stop
from sweep.data.config import TrialConfig
from sweep.data.result import EvalPoint, TrialResult

# What the child runs, as "module:function" with run_trial's signature; tests swap in faulty ones.
RUNNER = "sweep.engine.train:run_trial"
POLL_S = 0.25  # how often the parent looks whether it was asked to stop
CHANGED = ("the code of loraplus-sweep changed on disk since this sweep started (an upgrade, or an edit); "
           "start the sweep again to run its trials with the new code")


def code_fingerprint() -> str:
    """A hash of the package's source: a spawned child imports it afresh from disk, and a child whose
    code differs from its parent's could not be understood by it (a setting one side lacks)."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


CODE = code_fingerprint()  # this process's code, read when it imported the package


class TrialFailed(Exception):
    """A trial that ended without a result; the message is the reason recorded with it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail  # a traceback, when there is one


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where a trial runs: environment for the child (e.g. CUDA_VISIBLE_DEVICES) and its CPU threads."""

    env: tuple[tuple[str, str], ...] = ()
    threads: int | None = None
    label: str = "cpu"
    device: str | None = None  # what a trial's device auto or cuda means here: cuda:0+1 for a group


def spread_device(cfg: TrialConfig, slot: Slot) -> TrialConfig:
    """The trial as the slot runs it: spread over the slot's GPUs where it has several and the trial
    names no device of its own."""
    if slot.device and cfg.device in ("auto", "cuda"):
        return cfg.replace(device=slot.device)
    return cfg


def make_slots(devices: str, jobs: int) -> list[Slot]:
    """One slot per GPU for `devices` "auto" (every visible GPU) or "0,1,..."; one per group of GPUs
    for "0+1,2+3" (its trials spread over the group: sweep.engine.models); else `jobs` CPU slots that share
    the cores. No GPU found with "auto" means the CPU."""
    if devices != "cpu":
        ids = _gpu_ids() if devices == "auto" else [d.strip() for d in devices.split(",") if d.strip()]
        if ids:
            return [_gpu_slot(i.split("+")) for i in ids]
        if devices != "auto":
            raise SweepError(f"--devices {devices!r} names no GPU")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return [Slot((), threads, f"cpu#{n}") for n in range(jobs)]


def _gpu_slot(ids: list[str]) -> Slot:
    """A slot that sees GPUs `ids` alone (renumbered from 0 by CUDA_VISIBLE_DEVICES)."""
    if len(ids) == 1:
        return Slot((("CUDA_VISIBLE_DEVICES", ids[0]),), None, f"cuda:{ids[0]}")
    spread = "cuda:" + "+".join(str(n) for n in range(len(ids)))
    return Slot((("CUDA_VISIBLE_DEVICES", ",".join(ids)),), None, "cuda:" + "+".join(ids), spread)


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if sys.platform == "linux" and not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/dxg"):
        return []  # no NVIDIA device node (WSL's GPUs show as /dev/dxg): no need to import torch to ask
    import torch  # device_count() asks NVML and leaves CUDA uninitialised in this process

    return [str(i) for i in range(torch.cuda.device_count())]


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the parent dies, even by SIGKILL, so a killed
    sweep leaves no trial training on."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the child ends at its next message to the parent (a broken pipe)


def _start(proc: mp.process.BaseProcess) -> None:
    """Start the child with SIGINT blocked (the child inherits the mask). A Ctrl-C at a terminal
    reaches the whole process group: the child ignores it once running, but one that lands while it
    starts would kill it with a traceback."""
    # Started by the first spawn, multiprocessing's resource tracker unblocks SIGINT in this thread
    # once it runs (bpo-33613): start it before blocking.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _ParentGone(Exception):
    """The pipe to the parent broke: the parent was killed."""


@contextlib.contextmanager
def _to_parent() -> Iterator[None]:
    try:
        yield
    except (BrokenPipeError, ConnectionResetError, EOFError) as e:
        raise _ParentGone() from e


def _serve(conn: Connection, runner: str, env: dict[str, str], threads: int | None, parent_code: str) -> None:
    """A slot's process: start once (imports, threads), then run the trials the parent sends, one at a
    time, until told to exit. Base weights and tasks stay loaded between trials (sweep.engine.kinds caches
    them); each trial seeds and re-creates what it trains. After a trial that failed it exits, so the
    next trial starts in a fresh process."""
    # Ctrl-C is the parent's to handle: it stops the trial by killing this process. Ignoring the
    # signal also drops one that came while it was blocked (see _start).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent()
    if parent_code != CODE:
        conn.send(("error", CHANGED, ""))
        conn.close()
        return
    # Before torch is imported, so that CUDA sees only this trial's device.
    os.environ.update(env)
    import torch

    from sweep.core.quiet import quiet_libraries

    quiet_libraries()
    module, _, name = runner.partition(":")
    run_trial = getattr(importlib.import_module(module), name)
    if threads:
        torch.set_num_threads(threads)
    try:
        conn.send(("ready",))
        while (msg := conn.recv())[0] == "trial" and _run_one(conn, run_trial, msg[1]):
            pass
    except (_ParentGone, BrokenPipeError, ConnectionResetError, EOFError):
        pass  # killed with the parent in a moment (_die_with_parent); nobody to tell
    conn.close()
    # Done, results sent: skip the interpreter's teardown, which with torch and transformers loaded
    # takes about a second that the parent spends waiting for this process to end (close()).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_one(conn: Connection, run_trial: Callable, cfg: TrialConfig) -> bool:
    """Run one trial and send its result or its failure; False when this process should end."""
    import torch

    def on_step(step: int, total: int, loss: float) -> None:
        with _to_parent():
            conn.send(("step", step, total, loss))

    def on_eval(point: EvalPoint) -> bool:
        with _to_parent():
            conn.send(("eval", dataclasses.asdict(point)))
            return bool(conn.recv())

    try:
        result = run_trial(cfg, on_eval=on_eval, on_step=on_step)
    except _ParentGone:
        raise
    except torch.OutOfMemoryError as e:
        conn.send(("error", f"out of memory: {str(e).splitlines()[0]}", ""))
    except SweepError as e:
        conn.send(("error", str(e), ""))
    except Exception as e:  # the process boundary: report any failure with its reason, then exit
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                   traceback.format_exc()))
    else:
        conn.send(("result", result.to_dict()))
        return True
    return False


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        hint = " (out of host memory?)" if -code == signal.SIGKILL else ""
        return f"trial process killed by {sig}{hint}"
    return f"trial process exited with code {code} without a result"


class SlotProcess:
    """The parent's handle on one slot's process: started on the first trial, kept for the next ones,
    and replaced after any trial that did not end with a result (an error, a crash, a timeout, a stop).
    Use it as a context manager, or call close()."""

    def __init__(self, slot: Slot = Slot()) -> None:
        self.slot = slot
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._waiting = False  # spawned, its "ready" not yet read
        self.started = 0  # processes started, for tests and progress

    def __enter__(self) -> SlotProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        cfg: TrialConfig,
        on_eval: Callable[[EvalPoint], bool] | None = None,
        on_step: Callable[[int, int, float], None] | None = None,
        timeout: float | None = None,
        cancel: Stop | None = None,
    ) -> TrialResult:
        """run_trial in the slot's process; raises TrialFailed with the reason if it gives no result,
        and sweep.core.signals.Interrupted (with cancel's reason) once `cancel` is set, the process killed.
        `timeout` counts from this call, a process's start included when one starts."""
        cancel = cancel or Stop()
        cancel.check()
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = False
        try:
            conn = self._ready(deadline, timeout, cancel)
            self._send(conn, ("trial", spread_device(cfg, self.slot)), cancel)
            result = self._follow(conn, on_eval, on_step, deadline, timeout, cancel)
            ok = True
            return result
        finally:
            if not ok:
                self._kill()

    def close(self) -> None:
        """End the process, if one runs: asked to exit between trials, killed if it does not (or if it
        is still starting: it reads nothing until it is ready)."""
        if not self._waiting and self._conn is not None and self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("exit",))
            self._proc.join(timeout=10)
        self._kill()

    def spawn(self) -> None:
        """Start the process without waiting for it: its imports take seconds, which the caller can
        spend on other work. The first trial waits for it to be ready."""
        self._kill()
        ctx = mp.get_context("spawn")  # a fresh interpreter: no CUDA state or locks inherited
        parent, child = ctx.Pipe()
        # Trials go over the pipe as config objects (pickled by this process), not as JSON: each
        # carries this machine's --trust-remote-code, which no serialised config may hold.
        self._proc = ctx.Process(target=_serve, args=(child, RUNNER, dict(self.slot.env), self.slot.threads,
                                                      CODE), daemon=True)
        self._conn = parent
        _start(self._proc)
        child.close()
        self.started += 1
        self._waiting = True

    def _ready(self, deadline: float | None, timeout: float | None, cancel: Stop) -> Connection:
        if not self._waiting and self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        if not self._waiting:  # none, or one that died between trials
            self.spawn()
        assert self._conn is not None  # spawn() set it; _kill() clears _waiting with it
        msg = self._next(self._conn, deadline, timeout, cancel)
        self._waiting = False
        if msg[0] == "error":
            raise TrialFailed(msg[1], msg[2])
        return self._conn

    def _next(self, conn: Connection, deadline: float | None, timeout: float | None, cancel: Stop) -> tuple:
        """The process's next message; TrialFailed if it dies or the deadline passes first."""
        assert self._proc is not None
        while True:
            wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            if conn.poll(wait):
                try:
                    return conn.recv()
                except (EOFError, ConnectionResetError):  # a reset: it died before reading what we sent
                    break  # the process died; its exit code says how
            elif not self._proc.is_alive():
                break
            cancel.check()
            if deadline is not None and time.monotonic() >= deadline:
                raise TrialFailed(f"timed out after {timeout:g} s")
        self._died(cancel)

    def _send(self, conn: Connection, msg: object, cancel: Stop) -> None:
        try:
            conn.send(msg)
        except (BrokenPipeError, ConnectionResetError):
            self._died(cancel)

    def _died(self, cancel: Stop) -> typing.NoReturn:
        assert self._proc is not None
        self._proc.join(timeout=30)
        cancel.check()  # a SIGTERM to the process group ends the child too: the stop is the reason
        raise TrialFailed(_describe_exit(self._proc.exitcode))

    def _follow(self, conn: Connection, on_eval, on_step, deadline: float | None, timeout: float | None,
                cancel: Stop) -> TrialResult:
        while True:
            msg = self._next(conn, deadline, timeout, cancel)
            kind = msg[0]
            if kind == "step" and on_step is not None:
                on_step(*msg[1:])
            elif kind == "eval":
                self._send(conn, bool(on_eval(EvalPoint(**msg[1]))) if on_eval is not None else False, cancel)
            elif kind == "result":
                return TrialResult.from_dict(msg[1])
            elif kind == "error":
                raise TrialFailed(msg[1], msg[2])

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(timeout=30)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self._waiting = False


# Processes started before a sweep's checks (prestart), each waiting for its slot's worker.
_early: dict[Slot, SlotProcess] = {}


def prestart(slots: list[Slot]) -> None:
    """Start these slots' processes now, so that their imports and start (seconds each) overlap
    the parent's checks of the study instead of delaying its first trial. slot_process() hands them
    to the workers; close_early() ends any that no worker took."""
    for slot in slots:
        if slot not in _early:
            process = SlotProcess(slot)
            process.spawn()
            _early[slot] = process


def slot_process(slot: Slot) -> SlotProcess:
    """The slot's process started by prestart, else a new handle that starts one on its first trial."""
    return _early.pop(slot, None) or SlotProcess(slot)


def close_early() -> None:
    while _early:
        _early.popitem()[1].close()


def run_isolated(
    cfg: TrialConfig,
    on_eval: Callable[[EvalPoint], bool] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    timeout: float | None = None,
    slot: Slot = Slot(),
    cancel: Stop | None = None,
) -> TrialResult:
    """One trial in a process of its own (see SlotProcess.run)."""
    with SlotProcess(slot) as process:
        return process.run(cfg, on_eval, on_step, timeout, cancel)
