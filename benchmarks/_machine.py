"""Describe the machine a benchmark ran on (written at the top of every results file)."""

from __future__ import annotations

import os
import platform
import subprocess


def machine_description() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    gpu = ""
    if torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}{gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}; medseg commit {commit}"
    )


def write_results(stem: str, lines: list[str], data: object) -> None:
    """``benchmarks/results/<stem>.md`` (the table lines) and ``<stem>.json`` (``data``), then print the table."""
    import json
    from pathlib import Path

    results = Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (results / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    print("\n".join(lines))


def merged_rows(stem: str, rows: list[dict], key: str, field: str | None = None) -> list[dict]:
    """The rows of ``benchmarks/results/<stem>.json`` (its ``field`` where the file holds a dict), with ``rows``
    replacing those of the same ``key`` in place and the others appended: re-running part of a benchmark keeps
    the rows it did not measure."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent / "results" / f"{stem}.json"
    old = json.loads(path.read_text()) if path.is_file() else []
    if field is not None:
        old = old.get(field, []) if isinstance(old, dict) else []
    new = {r[key]: r for r in rows}
    return [new.pop(r[key], r) for r in old] + list(new.values())
