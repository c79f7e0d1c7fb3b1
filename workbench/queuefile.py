"""queue.json, the job queue's durable state: read without trusting it, written whole.

    {"format": 1, "next_id": 4, "seq": 12, "applied": 11,
     "jobs": [{"id": "j1", "kind": "train", "state": "running", "run_dir": "made-20261204-101500", ...}],
     "commands": [{"seq": 12, "op": "cancel", "id": "j2", "position": null, "overrides": [], "at": 1764843300.0}]}

A client leaves commands for the owner, each with the next sequence number (``seq``); the owner
applies them in that order, records the last one applied (``applied``) and clears the list in
the same atomic write that records their effect, so a command is applied once, in order, and
none is lost when an owner dies: with no owner alive, the client applying its own command
applies every pending one before it.

``read_queue`` refuses a file whose top level is damaged ("not a queue file: …", so nobody
overwrites it with an empty queue) and reads the rest record by record: a job record that
cannot be read is reported in one line (``QueueData.problems``) and written back exactly as it
was; a command that cannot be read is reported and ignored, and no job is touched by it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import UserError, os_error_text
from workbench.fileio import atomic_write_text, read_bytes
from workbench.jobstate import JOB_ID, BadRecord, Job

QUEUE_FILE, LOCK_FILE, MUTEX_FILE = "queue.json", "queue.lock", ".queue.mutex"
FORMAT = 1
OPS = ("cancel", "pause", "resume", "move", "remove")


@dataclass
class Command:
    seq: int
    op: str
    id: str
    position: int | None = None
    overrides: list[str] = field(default_factory=list)
    at: float = 0.0

    def record(self) -> dict:
        return {"seq": self.seq, "op": self.op, "id": self.id, "position": self.position,
                "overrides": list(self.overrides), "at": self.at}


@dataclass
class QueueData:
    next_id: int = 1
    seq: int = 0                 # the last command number given out
    applied: int = 0             # the last command number an owner applied
    jobs: list[Job] = field(default_factory=list)
    bad: list[Any] = field(default_factory=list)       # job records that could not be read, kept as they were
    commands: list[Command] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each


def _positive_int(value, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {json.dumps(value)[:40]}")
    return value


def _command(raw: Any, default_seq: int) -> Command:
    if not isinstance(raw, dict):
        raise ValueError(f"not an object but {type(raw).__name__}")
    op, job_id = raw.get("op"), raw.get("id")
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, not {json.dumps(op)[:40]}")
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ValueError(f"id must be a job id such as j3, not {json.dumps(job_id)[:40]}")
    seq = _positive_int(raw["seq"], "seq", 1) if "seq" in raw else default_seq
    position = raw.get("position")
    if op == "move":
        position = _positive_int(position, "position", 0)
    elif position is not None:
        raise ValueError(f"position goes with move only, not with {op}")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ValueError("overrides must be a list of strings")
    at = raw.get("at", 0.0)
    at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at) else 0.0
    return Command(seq, op, job_id, position, list(overrides), at)


def parse_queue(data: Any, runs_dir: Path) -> QueueData:
    """queue.json's content, checked; ValueError for damage at the top level."""
    if not isinstance(data, dict):
        raise ValueError("its top level is not an object")
    fmt = data.get("format", FORMAT)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ValueError(f"format must be a positive integer, not {json.dumps(fmt)[:40]}")
    if fmt > FORMAT:
        raise ValueError(f"it is format {fmt}, written by a newer genwb (this one reads format {FORMAT})")
    out = QueueData(next_id=_positive_int(data.get("next_id", 1), "next_id", 1),
                    seq=_positive_int(data.get("seq", 0), "seq", 0),
                    applied=_positive_int(data.get("applied", 0), "applied", 0))
    jobs, commands = data.get("jobs", []), data.get("commands", [])
    if not isinstance(jobs, list):
        raise ValueError(f"jobs must be a list, not {type(jobs).__name__}")
    if not isinstance(commands, list):
        raise ValueError(f"commands must be a list, not {type(commands).__name__}")
    seen: set[str] = set()
    for i, rec in enumerate(jobs, 1):
        try:
            job = Job.from_record(rec, runs_dir)
            if job.id in seen:
                raise BadRecord(f"its id {job.id} is used by an earlier record too")
        except BadRecord as e:
            name = rec.get("id") if isinstance(rec, dict) and isinstance(rec.get("id"), str) else None
            out.bad.append(rec)
            if name and JOB_ID.fullmatch(name):  # its id stays taken
                out.next_id = max(out.next_id, int(name[1:]) + 1)
            out.problems.append(f"job record {i}{f' ({name})' if name else ''} cannot be read: {e}; it is left as it is "
                                f"and not run: fix or remove it")
            continue
        seen.add(job.id)
        out.jobs.append(job)
        out.next_id = max(out.next_id, int(job.id[1:]) + 1)
    for i, raw in enumerate(commands, 1):
        try:
            command = _command(raw, out.seq + 1)
        except (ValueError, KeyError) as e:
            out.problems.append(f"command {i} cannot be read ({e}); it is ignored")
            continue
        out.seq = max(out.seq, command.seq)
        if command.seq > out.applied:
            out.commands.append(command)
    out.commands.sort(key=lambda c: c.seq)
    return out


def read_queue(path: Path, runs_dir: Path) -> QueueData:
    """queue.json, checked (an empty queue if there is none yet); UserError "not a queue file: …"
    if it cannot be read at all, so that nobody overwrites a damaged queue with an empty one."""
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return QueueData()
    except OSError as e:
        raise UserError(f"{path}: cannot read the queue ({os_error_text(e)}); move it aside to start an empty queue") from None
    try:
        return parse_queue(json.loads(raw), runs_dir)
    except RecursionError:
        problem = "it is nested too deeply"
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text"
    except json.JSONDecodeError as e:
        problem = f"bad JSON at line {e.lineno} column {e.colno}"
    except ValueError as e:
        problem = str(e)
    raise UserError(f"{path}: not a queue file: {problem}; move it aside to start an empty queue")


def write_queue(path: Path, data: QueueData, runs_dir: Path) -> None:
    atomic_write_text(path, json.dumps({
        "format": FORMAT, "next_id": data.next_id, "seq": data.seq, "applied": data.applied,
        "jobs": [job.record(runs_dir) for job in data.jobs] + list(data.bad),
        "commands": [c.record() for c in data.commands]}, indent=1) + "\n")
