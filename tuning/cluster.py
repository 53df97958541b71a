"""Ray for a sweep: the address and the resources checked before anything runs, Ray started (or
joined) within a stated time, and every Ray process this command started gone when it ends.

    check_address(address)                 # --address: HOST:PORT, ray://HOST:PORT, auto (UserError, exit 2)
    check_local_resources(cfg, address)    # a Ray started here: tune.cpus/gpus_per_trial against this machine
    session = start(address)               # RayUnavailable (one line, exit 1) when Ray cannot start or be reached
    check_resources(cfg)                   # against the cluster Ray sees (joined clusters)
    stop(session)                          # ray.shutdown(), then any process Ray left behind is ended

`RayUnavailable` is a ConnectionError (an OSError), which the command line prints as one line
with exit status 1. An address that does not answer within `DISTILL_RAY_TIMEOUT` seconds (15 by
default) is refused before `ray.init`, which would otherwise retry for minutes; the wait is a
plain socket connect, so SIGINT and SIGTERM end it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Optional

from distill.config import Config
from distill.errors import UserError

ADDRESS = re.compile(r"(?:(?P<scheme>ray)://)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")
FORMS = "HOST:PORT as `ray start --head` prints it (e.g. 10.0.0.1:6379), ray://HOST:10001, or auto"


class RayUnavailable(ConnectionError):
    """Ray could not be started here or reached at --address; the message names the cause and the fix."""


def timeout_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("DISTILL_RAY_TIMEOUT", "15")))
    except ValueError:
        raise UserError(f"DISTILL_RAY_TIMEOUT={os.environ['DISTILL_RAY_TIMEOUT']!r} is not a number of "
                        f"seconds") from None


def check_address(address: Optional[str]) -> None:
    """A malformed --address: one line, exit 2, before anything runs."""
    if address is None or address == "auto":
        return
    match = ADDRESS.fullmatch(address.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise UserError(f"--address {address!r} is not a Ray address; give {FORMS}")


def local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no CUDA at all
        return 0


def check_local_resources(cfg: Config, address: Optional[str]) -> None:
    """tune.cpus_per_trial / gpus_per_trial against the machine a Ray started here would have."""
    if address is not None:
        return  # a joined cluster is asked once joined (check_resources)
    from distill.export.cost import cpu_count

    _compare(cfg, {"CPU": cpu_count(), "GPU": local_gpus()}, "this machine")


def check_resources(cfg: Config) -> None:
    import ray

    _compare(cfg, ray.cluster_resources(), "the Ray cluster")


def _compare(cfg: Config, have: dict, where: str) -> None:
    for name, want in (("CPU", cfg.tune.cpus_per_trial), ("GPU", cfg.tune.gpus_per_trial)):
        if want > 0 and have.get(name, 0) < want:
            raise UserError(f"tune.{name.lower()}s_per_trial={want:g} but {where} has {have.get(name, 0):g} "
                            f"{name}s; lower it, or join a larger cluster with --address")


def _reachable(address: str, seconds: float) -> None:
    match = ADDRESS.fullmatch(address.strip())
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=seconds):
            pass
    except OSError as err:
        why = "no answer" if isinstance(err, socket.timeout) else (err.strerror or type(err).__name__)
        raise RayUnavailable(f"--address {address}: no Ray cluster answers there within {seconds:g} s ({why}); "
                             f"start one with `ray start --head` on that machine and pass the address it "
                             f"prints, or leave out --address to start Ray here") from None


# ---------------------------------------------------------------- processes


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, from /proc (Linux; elsewhere nothing is known)."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
            parent = int(text[text.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found.setdefault(parent, []).append(int(entry.parent.name))
    return found


def descendants() -> set[int]:
    tree, seen, todo = _children(), set(), [os.getpid()]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def end_processes(pids: set[int], grace: float = 5.0) -> None:
    """SIGTERM to each pid (ours, by id), then SIGKILL to those still there after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 1.0)
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reaped
                        alive.discard(pid)
                except ChildProcessError:  # not our child: gone when /proc no longer has it
                    if not Path(f"/proc/{pid}").exists():
                        alive.discard(pid)
            time.sleep(0.05)
        pids = alive
        if not pids:
            return


class Session:
    """What `start` did: whether Ray was started or joined here, and the processes there were before."""

    def __init__(self, started: bool, before: set[int]):
        self.started, self.before = started, before


def _fix(err: BaseException) -> str:
    text = str(err).lower()
    if "timed out" in text or "timeout" in text:
        return ("Ray timed out while starting (a loaded machine?): run the command again when the machine is "
                "less busy, or start Ray yourself with `ray start --head` and pass --address auto")
    if "address already in use" in text or "port" in text:
        return ("a port Ray needs is taken (another Ray here?): `ray stop`, or join that Ray with --address auto")
    return "see Ray's logs in /tmp/ray/session_latest/logs, or start Ray yourself and pass --address"


def start(address: Optional[str]) -> Session:
    """Join `address`, or start a local Ray with this machine's CPUs (Session.started: Ray is ours to stop)."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # each epoch's checkpoint forces an experiment snapshot (num_to_keep); that is the point, not a problem
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return Session(False, set())
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
    # kinds from outside this package (distill.kinds) must be found by every trial, on every node
    passed = {name: os.environ[name] for name in ("DISTILL_KINDS", "PYTHONPATH") if os.environ.get(name)}
    if passed.get("DISTILL_KINDS"):
        kwargs["runtime_env"] = {"env_vars": passed}
    if address not in (None, "auto"):
        _reachable(address, timeout_seconds())
    session = Session(True, descendants())
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            from distill.export.cost import cpu_count

            # address="local": never join a cluster that `ray start` left running on this machine; its
            # "token authentication is enabled" notice is about the cluster we start for ourselves: not the user's
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False, **kwargs)
    except KeyboardInterrupt:
        stop(session)
        raise
    except Exception as err:  # noqa: BLE001 - Ray's own errors are many; each becomes one line
        stop(session)
        lines = str(err).strip().splitlines()
        cause = f"{type(err).__name__}: {lines[0][:200] if lines else 'no message'}"
        if address:
            raise RayUnavailable(f"--address {address}: cannot join a Ray cluster there ({cause}); start one "
                                 f"with `ray start --head` and pass the address it prints") from None
        raise RayUnavailable(f"Ray could not start on this machine ({cause}); {_fix(err)}") from None
    return session


def stop(session: Optional[Session]) -> None:
    """ray.shutdown() of a Ray started or joined here, then every process it left behind is ended."""
    if session is None or not session.started:
        return
    import ray

    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - a Ray that never came up
        pass
    left = descendants() - session.before
    if left:
        end_processes(left)
