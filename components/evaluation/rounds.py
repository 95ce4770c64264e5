"""Interleaved timing rounds across candidates that each run in a process of their own.

Every (candidate, profile) measurement is a `components.evaluation.profiles --serve` process, so
its peak RSS is its own. All of a profile's processes start together (loading and the accuracy
pass are not timed, so they may share the cores) and report ``ready``; then round ``r`` asks
every candidate in turn for one round of timed calls, the order rotated by ``r`` as in
`timing.interleaved`, while every other process waits on its stdin: exactly one process runs
at a time, and a load spike or a frequency change hits every candidate alike instead of the
one that happened to be measured then. A short pause after each round lets the previous
process's thread pool stop spinning. This costs no more process starts than one process per
measurement did (rounds instead would pay one start, ~1 s, per round and candidate).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import time
from typing import Any

from components.evaluation.profiles import summarize_rounds

PAUSE_S = 0.005  # after each round: onnxruntime's idle workers spin briefly before sleeping


class Worker:
    """One measuring process, spoken to in lines: a command out, one JSON line back."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        # a file, not a pipe: a pipe nobody reads could fill and block the process
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, env=env, bufsize=0)
        self.buffer = b""

    def ask(self, command: str | None, timeout_s: float) -> dict[str, Any]:
        """Send ``command`` (None: only read) and return the reply, or ``{"error": ...}``."""
        if command is not None:
            try:
                self.proc.stdin.write(f"{command}\n".encode())
            except (OSError, ValueError):  # the process ended (or was stopped)
                return {"error": self.failure()}
        deadline = time.monotonic() + timeout_s
        while True:
            line, sep, rest = self.buffer.partition(b"\n")
            if sep:
                self.buffer = rest
                if line.startswith(b"{"):  # anything else a library printed is not a reply
                    return json.loads(line)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return {"error": f"timed out after {timeout_s:g} s"}
            with selectors.DefaultSelector() as sel:
                sel.register(self.proc.stdout, selectors.EVENT_READ)
                if not sel.select(left):
                    continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return {"error": self.failure()}
            self.buffer += chunk

    def failure(self) -> str:
        """The last line of stderr of a process that ended (or its exit status)."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        if self.stderr.closed:
            return f"exit {code}"
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
        return (tail or [f"exit {code}"])[0][:500]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()
        self.stderr.close()


def run_rounds(cmds: dict[str, list[str]], env: dict[str, str], rounds: int, timeout_s: float,
               untimed: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Start every command, then time ``rounds`` interleaved rounds of each; per name its
    measurement (the ``ready`` payload, `summarize_rounds`, ``peak_rss_mb``) or ``{"error"}``.

    Names in ``untimed`` (the baseline) only report ``ready``.
    """
    workers = {name: Worker(cmd, env) for name, cmd in cmds.items()}
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, worker in workers.items():
            results[name] = worker.ask(None, timeout_s)
            results[name].pop("ready", None)
        timed = [n for n in workers if n not in untimed and "error" not in results[n]]
        samples: dict[str, list[list[float]]] = {n: [] for n in timed}
        for r in range(rounds):
            for name in timed[r % len(timed):] + timed[: r % len(timed)] if timed else []:
                if "error" in results[name]:
                    continue
                reply = workers[name].ask("round", timeout_s)
                if "error" in reply:
                    results[name] = reply
                else:
                    samples[name].append(reply["times"])
                time.sleep(PAUSE_S)
        for name in timed:
            if "error" in results[name]:
                continue
            final = workers[name].ask("stop", timeout_s)
            if "error" in final:
                results[name] = final
                continue
            results[name].update(summarize_rounds(samples[name], results[name]["batch_size"]),
                                 **final)
    finally:
        for worker in workers.values():
            worker.close()
    return results
