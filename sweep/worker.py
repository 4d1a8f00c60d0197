"""Run one trial in a child process of its own: its own device, a wall-clock timeout, and a crash,
an out-of-memory error or a hang that ends the trial with a reason instead of the sweep.

The child runs sweep.train.run_trial and sends progress, evaluations and the result back over a
pipe; the parent answers each evaluation with "stop or go on" (the pruner's decision), so only the
parent ever talks to the study.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from sweep.config import TrialConfig
from sweep.errors import SweepError
from sweep.result import EvalPoint, TrialResult

# What the child runs, as "module:function" with run_trial's signature; tests swap in faulty ones.
RUNNER = "sweep.train:run_trial"


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


def make_slots(devices: str, jobs: int) -> list[Slot]:
    """One slot per GPU for `devices` "auto" (every visible GPU) or "0,1,..."; else `jobs` CPU slots
    that share the cores. No GPU found with "auto" means the CPU."""
    if devices != "cpu":
        ids = _gpu_ids() if devices == "auto" else [d.strip() for d in devices.split(",") if d.strip()]
        if ids:
            return [Slot((("CUDA_VISIBLE_DEVICES", i),), None, f"cuda:{i}") for i in ids]
        if devices != "auto":
            raise SweepError(f"--devices {devices!r} names no GPU")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return [Slot((), threads, f"cpu#{n}") for n in range(jobs)]


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
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


def _child(conn: Connection, runner: str, cfg_json: str, env: dict[str, str], threads: int | None) -> None:
    _die_with_parent()
    # Before torch is imported, so that CUDA sees only this trial's device.
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    from sweep.quiet import quiet_libraries

    quiet_libraries()

    module, _, name = runner.partition(":")
    run_trial = getattr(importlib.import_module(module), name)

    if threads:
        torch.set_num_threads(threads)

    def on_step(step: int, total: int, loss: float) -> None:
        conn.send(("step", step, total, loss))

    def on_eval(point: EvalPoint) -> bool:
        conn.send(("eval", dataclasses.asdict(point)))
        return bool(conn.recv())

    try:
        result = run_trial(TrialConfig.from_json(cfg_json), on_eval=on_eval, on_step=on_step)
    except torch.OutOfMemoryError as e:
        conn.send(("error", f"out of memory: {str(e).splitlines()[0]}", ""))
    except SweepError as e:
        conn.send(("error", str(e), ""))
    except Exception as e:  # the process boundary: report any failure with its reason, then exit
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                   traceback.format_exc()))
    else:
        conn.send(("result", result.to_dict()))
    finally:
        conn.close()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        hint = " (out of host memory?)" if -code == signal.SIGKILL else ""
        return f"trial process killed by {sig}{hint}"
    return f"trial process exited with code {code} without a result"


def run_isolated(
    cfg: TrialConfig,
    on_eval: Callable[[EvalPoint], bool] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    timeout: float | None = None,
    slot: Slot = Slot(),
    cancel: threading.Event | None = None,
) -> TrialResult:
    """run_trial in a spawned child; raises TrialFailed with the reason if it gives no result, and
    KeyboardInterrupt when `cancel` is set (the way other threads pass on a Ctrl-C)."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no CUDA state or locks inherited
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, RUNNER, cfg.to_json(), dict(slot.env), slot.threads),
                       daemon=True)
    proc.start()
    child.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            if parent.poll(wait):
                try:
                    msg = parent.recv()
                except EOFError:
                    break  # the child died; its exit code says how
                kind = msg[0]
                if kind == "step" and on_step is not None:
                    on_step(*msg[1:])
                elif kind == "eval":
                    parent.send(bool(on_eval(EvalPoint(**msg[1]))) if on_eval is not None else False)
                elif kind == "result":
                    proc.join(timeout=30)
                    return TrialResult.from_dict(msg[1])
                elif kind == "error":
                    proc.join(timeout=30)
                    raise TrialFailed(msg[1], msg[2])
            elif not proc.is_alive():
                break
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            if deadline is not None and time.monotonic() >= deadline:
                raise TrialFailed(f"timed out after {timeout:g} s")
        proc.join(timeout=30)
        raise TrialFailed(_describe_exit(proc.exitcode))
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=30)
        parent.close()
