"""Inputs a loader skipped (an undecodable image, a path outside its root, a pixel bomb): recorded per
file and reason in the task, then in the run (``metrics.json``, ``events.jsonl``, ``report.html``,
one terminal line per task).

    skip_record(errors)        # a loader's Task.metadata["skipped"]
    skipped_inputs(tasks)      # metrics.json "skipped_inputs": {task: {count, reasons, files, files_not_listed}}
    skip_lines(summary)        # "task X: skipped 3 images (undecodable_image: 2, outside_root: 1); listed in metrics.json"

A loader's error messages read ``"<file>: <reason>: <detail>"`` or ``"<file>: not a readable image
(undecodable_image: ...)"`` (:class:`medcl.data.images.ImageRefused`); :func:`parse_skip` splits them
into file and reason. At most :data:`LISTED_FILES` files are listed per task (a corpus with 100,000
broken rows would otherwise carry them to every worker); ``files_not_listed`` counts the rest, and
``count`` and ``reasons`` always count all of them.
"""
from __future__ import annotations

from medcl.data.images import REFUSAL_REASONS, refusal_counts

LISTED_FILES = 100
_UNREADABLE = ": not a readable image"


def parse_skip(message: str) -> dict[str, str]:
    """``{"file", "reason", "detail"}`` of one loader error message (see the module doc)."""
    text = str(message)
    marks = [(text.find(f": {r}: "), r) for r in REFUSAL_REASONS] + [(text.find(_UNREADABLE), "undecodable_image")]
    found = [(at, reason) for at, reason in marks if at > 0]
    if not found:
        file, _, detail = text.partition(": ")
        return {"file": file, "reason": "undecodable_image", "detail": detail}
    at, reason = min(found)
    return {"file": text[:at], "reason": reason, "detail": text[at + 2:]}


def skip_record(errors) -> dict:
    """What a loader keeps in ``Task.metadata["skipped"]``: ``count``, ``reasons`` (``{reason: n}``),
    ``examples`` (the first 10 messages) and ``files`` (the first :data:`LISTED_FILES` as
    ``{"file", "reason", "detail"}``), ``files_not_listed`` (the rest)."""
    errors = [str(e) for e in errors]
    return {"count": len(errors), "reasons": refusal_counts(errors), "examples": errors[:10],
            "files": [parse_skip(e) for e in errors[:LISTED_FILES]],
            "files_not_listed": max(0, len(errors) - LISTED_FILES)}


def skipped_inputs(tasks) -> dict[str, dict]:
    """Per task with skips: ``{"count", "reasons", "files": [{"file", "reason"}], "files_not_listed"}``
    (files as the loader listed them; a loader without ``files`` gives its ``examples``)."""
    out = {}
    for task in tasks:
        record = (getattr(task, "metadata", None) or {}).get("skipped") or {}
        if not record.get("count"):
            continue
        listed = record.get("files") or [parse_skip(e) for e in record.get("examples", ())]
        files = [{"file": f["file"], "reason": f["reason"]} for f in listed[:LISTED_FILES]]
        out[task.name] = {"count": int(record["count"]), "reasons": dict(record.get("reasons") or {}),
                          "files": files, "files_not_listed": int(record["count"]) - len(files)}
    return out


def skip_lines(summary: dict[str, dict], where: str = "metrics.json") -> list[str]:
    """One line per task of :func:`skipped_inputs`."""
    lines = []
    for task, record in summary.items():
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(record["reasons"].items(), key=lambda kv: -kv[1]))
        noun = "image" if record["count"] == 1 else "images"
        lines.append(f"task {task}: skipped {record['count']} {noun} ({reasons}); listed in {where}")
    return lines
