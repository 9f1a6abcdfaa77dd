"""Where each number in REPORT.md came from, and what is stale or pending (pure).

Reads only what a result file's ``meta`` holds: a file written before
:func:`bench.provenance.meta` existed has no commit or tree state, and the
report says so instead of guessing them.
"""

from __future__ import annotations

from bench.provenance import describe

HEADLINE_RULE = ("Repeated measurements (pipeline, hop, routing timings) report the **median** of their runs and "
                 "keep every run in the result file (`runs`, `runs_ms`; `\"headline\": \"median\"`).")
TIMINGS = ("pipeline-cpu", "hop-cpu", "routing")  # timing-sensitive: rerun only on a quiet machine
RERUN_TIMINGS = "python -m bench.all --only " + ",".join(TIMINGS)
# TODO(gpu-run-script): another engineer is adding a GPU run script; when it lands, replace these commands
# with it. The files below were deleted because they held hand-edited content and cannot be rerun here.
PENDING = (
    ("pipeline-gpu-", "pipeline throughput on an H100 and an H200 GPU",
     "on each GPU machine: `python -m bench.all --device cuda --only pipeline-gpu-<card>` "
     "(writes `pipeline-gpu-<card>.json`)"),
    ("pipeline-cpu-", "pipeline throughput on the 16-core CPUs of those GPU hosts",
     "on each GPU host: `python -m bench.pipeline --tokens 64 --repeats 3 --json "
     "--save bench/results/pipeline-cpu-<host>.json`"),
)


def recorded(res: dict) -> bool:
    """Whether the file's ``meta`` records the commit it was made from."""
    return bool(res.get("meta", {}).get("commit"))


def tree(m: dict) -> str:
    if m.get("dirty") is None:
        return "tree state unknown"
    if not m["dirty"]:
        return "clean tree"
    files = m.get("dirty_files", [])
    more = m.get("dirty_count", len(files)) - len(files)
    return "uncommitted changes in " + ", ".join(f"`{f}`" for f in files) + (f" and {more} more" if more > 0 else "")


def provenance(res: dict) -> str:
    """How one result file was made: command, commit and tree, machine, time taken, date."""
    m = res.get("meta")
    if not m:
        dev = res.get("device_name") or res.get("device")
        return ("command and machine not recorded (file written outside `python -m bench.all`"
                + (f"; device: {dev})" if dev else ")"))
    secs = f", {m['seconds']:.0f} s" if m.get("seconds") is not None else ""
    code = (f" at commit `{m['commit'][:10]}` ({tree(m)})" if recorded(res)
            else " (predates provenance: commit and tree state not recorded)")
    return f"`{m['command']}`{code} on {describe(m['machine'])}{secs}, {m['date']}"


def headline_note(stem: str, res: dict) -> str:
    """How ``res`` chose its headline among repeated runs, as a phrase."""
    if res.get("headline") == "median":
        return f"median of the runs, every run kept in `{stem}.json`"
    return "headline rule not recorded (the file predates it; its runs were not kept)"


def stale_note(stem: str, res: dict) -> str:
    """A warning line for a timing file made before provenance was recorded, else ''."""
    if stem not in TIMINGS or recorded(res):
        return ""
    return (f"_Stale until rerun: `{stem}.json` predates provenance (no commit or tree state recorded), so it may "
            f"not match the current code. Rerun on a quiet machine: `{RERUN_TIMINGS}`._\n")


def provenance_section(res: dict) -> str:
    """One row per result file: how it was made (as its ``meta`` records) and whether it is stale."""
    rows = [f"| `{stem}` | {provenance(r)} | "
            + (f"**stale: `{RERUN_TIMINGS}`**" if stale_note(stem, r) else "–") + " |"
            for stem, r in sorted(res.items())]
    head = ["## Provenance\n",
            "Every result file: the command, commit and tree, machine, wall time and date its `meta` records, "
            "and what must be rerun (timings only on a quiet machine).\n",
            "| file | made by | rerun |", "|---|---|---|"]
    return "\n".join(head + rows) + "\n"


def pending_section(res: dict) -> str:
    """Results deleted (hand-edited, not reproducible here) that wait for a rerun, with the command."""
    lines = [f"- {what}: pending a rerun; {how}." for prefix, what, how in PENDING
             if not any(k.startswith(prefix) for k in res)]
    if not lines:
        return ""
    return ("## Pending reruns\n\n" + "\n".join(lines)
            + "\n\nNo pipeline numbers from GPUs or GPU hosts are reported until these files exist.\n")
