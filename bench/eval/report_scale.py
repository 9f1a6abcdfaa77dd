"""The report's throughput-and-scale section: concurrent sessions, load, hosts across a network (pure)."""

from __future__ import annotations

from bench.eval.report_provenance import headline_note


def _table(head: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "–" if v is None else str(v)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def load_note(res: dict) -> str:
    """The machine's load average while a result was made, as its meta records it."""
    la = (res.get("meta") or {}).get("load_avg")
    if not la:
        return "load average not recorded"
    cores = res["meta"]["machine"].get("cores", "?")
    return f"load average {la['start'][0]} at the start and {la['end'][0]} at the end (1 min) on {cores} cores"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def _max_batch(c: dict) -> str:
    """Where a file cut its forwards below the default, say so (files before this field ran at 64)."""
    return f", at most {c['max_batch']} sessions a forward" if c.get("max_batch", 64) != 64 else ""


def _warmup(c: dict, what: str = "untimed warm-up run(s) per level first (`warmup_runs`)") -> str:
    return f"{c['warmup']} {what}, then " if c.get("warmup") else ""


def concurrency_part(stem: str, c: dict) -> str:
    spans = f" {c['spans']}" if c.get("spans") else ""
    out = [f"`{stem}`: {c['model']} on {c['device']} ({c['dtype']}), {c['stages']} stages{spans}, codec {c['codec']}, "
           f"{c['tokens']} new tokens per session, {c['thread_budget']}, batch window {c['batch_window_ms']} ms"
           f"{_max_batch(c)}; {_warmup(c)}{c['repeats']} runs, {headline_note(stem, c)}; {load_note(c)}.\n"]
    rows = []
    for s, r in sorted(c["sessions"].items(), key=lambda x: int(x[0])):
        per_run = ", ".join(f"{v:g}" for v in r["runs"]["vs_monolithic"])
        rows.append([s, r["tokens_per_s"], r["monolithic_tokens_per_s"], r["vs_monolithic"], per_run,
                     r["same_tokens_as_monolithic"], r["mean_batch_at_head"], r.get("unbatched_tokens_per_s"),
                     r.get("batched_vs_unbatched")])
    out.append(_table(["sessions", "ring tokens/s", "monolithic batched tokens/s", "ratio", "ratio per run",
                       "same tokens", "mean batch at head", "unbatched ring tokens/s", "batched / unbatched"],
                      rows) + "\n")
    g = goal(c)
    if g:
        out.append(f"Goal ({g[0]}): {_met(g[1])}.\n")
    return "\n".join(out)


def goal(c: dict) -> tuple[str, bool] | None:
    """Issue 14's goal for a concurrency result at 16 sessions: >= 0.9 of monolithic batched on a CPU,
    >= 0.85 on a GPU; None without a 16-session level."""
    r = c["sessions"].get("16")
    if r is None:
        return None
    share = 0.9 if c["device"] == "cpu" else 0.85
    return f"ring >= {share} of monolithic batched at 16 sessions on {c['device']}", r["vs_monolithic"] >= share


PHASE_NAMES = {  # worker.steptimes phases as the table names them
    "decode": "codec decode + payload hash check", "queue": "queue for the stage (batch window, other batches)",
    "forward": "stage forward (the whole batch)", "handoff": "scheduler thread handoff",
    "verify_wait": "wait for the input's signature check",
    "receipt": "receipts (own output, input kept for the received check)",
    "encode": "codec encode", "message": "message build + payload hash", "sign": "signing (step and answer)",
    "answer_check": "next hop's answer: signature check", "sample": "sampling (tail)", "other": "Python glue (rest)"}


OWN_WORK = ("decode", "verify_wait", "receipt", "encode", "message", "sign", "answer_check", "sample", "other")


def step_split(r: dict) -> dict[str, float]:
    """A session's decode step at the head, split over the ring: every stage's forwards, queueing and
    thread handoffs, the transports, and the hops' own work (codec, signing, checks, receipts,
    sampling, glue), ms (pure)."""
    st = r["stages"]
    return {"total": st[0]["total"], "forward": sum(s["forward"] for s in st), "queue": sum(s["queue"] for s in st),
            "handoff": sum(s["handoff"] for s in st), "transport": sum(r["transport_ms"]),
            "own work": sum(s.get(k, 0.0) for s in st for k in OWN_WORK)}


def _split_line(lv: str, r: dict) -> str:
    sp = step_split(r)
    parts = ", ".join(f"{k} {sp[k]:.1f} ms ({sp[k] / sp['total']:.0%})" for k in sp if k != "total")
    return (f"{lv} session(s): a decode step takes {sp['total']:.1f} ms at the head; over the ring: {parts}; the "
            f"stage threads are in forwards {sum(r['busy_share']):.2f} of the round together (cores doing the "
            "model's work, of the ring's one thread per stage)")


def hopprofile_part(stem: str, h: dict) -> str:
    """Issue 14's hop profile: ms per decode step per session at each stage, per session count."""
    levels = sorted(h["levels"], key=int)
    stages = range(h["stages"])
    head = ["ms per decode step"] + [f"{lv} sess., stage {i}" for lv in levels for i in stages]

    def row(name, get):
        return [name] + [get(h["levels"][lv], i) for lv in levels for i in stages]

    rows = [row(PHASE_NAMES[k], lambda r, i, k=k: r["stages"][i].get(k) or None) for k in PHASE_NAMES]
    rows.append(row("gRPC transport to the next stage and back",
                    lambda r, i: r["transport_ms"][i] if i < len(r["transport_ms"]) else None))
    rows.append(row("**step total** (incl. the wait for later stages)", lambda r, i: r["stages"][i]["total"]))
    rows.append(row("mean batch", lambda r, i: r["stages"][i]["batch"]))
    rows.append(row("signature check, off the critical path", lambda r, i: r["stages"][i].get("verify_cpu")))
    rows.append(row("process CPU ms per token", lambda r, i: r["cpu_ms_per_token"].get(f"stage{i}")))
    rows.append(row("stage thread in forwards, share of the round", lambda r, i: r["busy_share"][i]))
    rates = "; ".join(f"{lv} session(s): {h['levels'][lv]['tokens_per_s']} tokens/s, "
                      f"{h['levels'][lv]['wall_ms_per_round']} ms per round" for lv in levels)
    pbuf = h["protobuf"]
    return "\n".join([
        f"`{stem}`: {h['model']} on {h['device']} ({h['dtype']}), {h['stages']} stages {h['spans']}, codec "
        f"{h['codec']}, {h['tokens']} new tokens per session, {h['threads']} torch thread(s) per process, batch window "
        f"{h['batch_window_ms']} ms; {_warmup(h, 'untimed, unprofiled warm-up run(s) per level first')}"
        f"{h['repeats']} runs, {headline_note(stem, h)}; {load_note(h)}"
        + (" (with the CUDA MPS control daemon running: `bench/gpu/profile.sh`)" if stem.endswith("-mps") else "")
        + ". Each node counts "
        "the phases of every decode step (`worker.steptimes`) and logs them when a session ends; stage i's step "
        "total includes its wait for stages i+1.. (the forward, queue and transport rows of later columns); "
        f"{h['note']}. {rates}.\n",
        _table(head, rows) + "\n",
        "Where the time goes: " + "; ".join(_split_line(lv, h["levels"][lv]) for lv in levels) + ".\n",
        f"Protobuf alone: a step message ({pbuf['step_bytes']} bytes) serialises in {pbuf['step_serialise_us']} us and "
        f"parses in {pbuf['step_parse_us']} us, its answer ({pbuf['answer_bytes']} bytes) in "
        f"{pbuf['answer_serialise_us']} and {pbuf['answer_parse_us']} us: {pbuf['per_hop_per_step_us']} us per hop "
        "per step, inside the transport row.\n"])


def stageprof_part(stem: str, sp: dict, generate_ms: float | None) -> str:
    """``bench.stageprof``: one session in one process, the stages' forwards against the unsplit model's;
    ``generate_ms``: monolithic ``generate``'s ms per token on the same machine and model, if measured."""
    rows = [[r["function"], r["calls_per_step"], r["own_ms_per_step"], r["cum_ms_per_step"]]
            for r in sp["profile_top_own_time"]]
    gen = (f" For comparison, monolithic `generate` in the pipeline benchmark on the same machine and shapes: "
           f"{generate_ms:.1f} ms per token; the unsplit forward timed here step by step is far slower than that "
           "and is not a fair baseline." if generate_ms else "")
    return "\n".join([
        f"`{stem}`: {sp['model']} on {sp['device']} ({sp['dtype']}), stages {sp['spans']} in one process, one "
        f"session, {sp['tokens']} decode steps, each forward timed to completion; medians of the steps, every "
        f"step kept in `{stem}.json`. The stages: {' + '.join(str(x) for x in sp['stage_ms_per_step'])} = "
        f"**{sp['stages_sum_ms_per_step']} ms per step**; the unsplit model's forward with a DynamicCache, timed "
        f"the same way: {sp['unsplit_ms_per_step']} ms.{gen} In the ring the same forwards take what the hop "
        "profile above shows: the difference is the stage process's other threads, not the split.\n",
        "Top functions of the stages' steps by own time (cProfile, per decode step):\n",
        _table(["function", "calls", "own ms", "cumulative ms"], rows) + "\n"])


def load_part(ld: dict) -> str:
    checks = ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else '**NO**'}" for k, v in ld["checks"].items())
    cpu = ld["cpu"]
    nodes = cpu["processes"].values()
    rows = [[k, v["jobs"], v["settled"], v["first_token_s"]["p50"], v["first_token_s"]["p95"], v["settle_s"]["p50"],
             v["settle_s"]["p95"], v["gas"]["p50"]] for k, v in sorted(ld["by_kind"].items())]
    rows.append(["all", ld["jobs"], sum(v["settled"] for v in ld["by_kind"].values()), ld["first_token_s"]["p50"],
                 ld["first_token_s"]["p95"], ld["settle_s"]["p50"], ld["settle_s"]["p95"], ld["gas"]["p50"]])
    return "\n".join([
        f"`load`: {ld['jobs']} jobs ({ld['mix']}; text jobs {ld['tokens_per_text_job']} tokens, 3 replicas of 2 hops; "
        f"image jobs 2 one-hop replicas) submitted at {ld['rate_per_s']}/s by {ld['requesters']} requesters through "
        f"`run_job` to {len(ld['nodes'])} node processes; {load_note(ld)}. **{ld['jobs_per_minute']} jobs per minute**; mean gas "
        f"per job {ld['gas']['per_job_mean']:,}.\n",
        _table(["jobs", "count", "settled", "first token p50 s", "p95 s", "settled p50 s", "p95 s", "gas p50"],
               rows) + "\n",
        f"Checks: {checks}. Fees {ld['wei']['fees']} wei: {ld['wei']['paid_to_nodes']} to nodes, "
        f"{ld['wei']['credited_to_requesters']} back to requesters, {ld['wei']['slashed']} slashed. "
        f"{ld['replicas_run']} replica runs for {ld['replicas_planned']} planned.\n",
        f"CPU over the {cpu['wall_s']} s load phase: the {len(nodes)} nodes together used {sum(n['mean_cores'] for n in nodes):.2f} "
        f"cores on average (busiest node's peak {max(n['peak_cores'] for n in nodes):.2f}); the machine's CPU was "
        f"idle {100 * cpu['machine_idle_share']:.0f}% of the time (other programs included).\n"])


def wan_part(w: dict) -> str:
    rows = [[k, r["tokens_per_s"], r.get("limit_tokens_per_s"), r.get("vs_limit"), r["aggregate_tokens_per_s"],
             r.get("aggregate_vs_smallest_rtt"), r["same_tokens_every_run"]]
            for k, r in sorted(w["rtt_ms"].items(), key=lambda x: float(x[0]))]
    o = w["relay_overhead_loopback"]
    keys = sorted(w["rtt_ms"], key=float)
    top = w["rtt_ms"][keys[-1]]
    loss = 1 - top.get("aggregate_vs_smallest_rtt", 1)
    return "\n".join([
        f"`wan`: {w['model']}, {w['stages']} stages in separate network namespaces, links capped at "
        f"{w['rate_mbit']:g} Mbit/s (tbf), delay from a user-space relay with jitter {100 * w['jitter_share']:.0f}% "
        f"of the one-way delay; {w['tokens']} tokens per session, {w['sessions']} sessions for the aggregate; "
        f"{w['repeats']} runs, {headline_note('wan', w)}; {load_note(w)}. {w['note']}.\n",
        _table(["RTT ms", "one session tokens/s", "limit", "vs limit", f"{w['sessions']} sessions tokens/s",
                "vs smallest RTT", "same tokens every run"], rows) + "\n",
        f"The relay's own cost on loopback (0 ms): {o['relayed_tokens_per_s']} tokens/s through it against "
        f"{o['direct_tokens_per_s']} direct ({o['relayed_vs_direct']} of direct).\n",
        f"Targets: one session >= {w['targets']['single_vs_limit']} of its limit at every RTT: "
        f"{_met(w['targets_met']['single'])}; aggregate at {keys[-1]} ms >= {w['targets']['aggregate_100_vs_10']} of "
        f"the smallest RTT: {_met(w['targets_met']['aggregate'])}. Petals reports losing about "
        f"{100 * w['petals_loss_at_100ms']:.0f}% of throughput at 100 ms RTT; here the aggregate loses "
        f"{100 * loss:.0f}% from the smallest RTT to {keys[-1]} ms.\n"])


def scale_section(res: dict) -> str:
    out = ["## 8. Throughput and scale\n"]
    conc = {k: v for k, v in sorted(res.items()) if k.startswith("concurrency-")}
    out.append("### Concurrent sessions\n")
    out += [concurrency_part(k, v) for k, v in conc.items()] or [
        "_Not measured in this run: `bench/results/concurrency-cpu.json` is missing._\n"]
    for k, v in sorted(res.items()):
        if k.startswith("hopprofile-"):
            out += ["### Where a decode step's time goes\n", hopprofile_part(k, v)]
    for k, v in sorted(res.items()):
        if k.startswith("stageprof-"):
            pipe = res.get(k.replace("stageprof-", "pipeline-"), {}).get("stages", {}).get("3", {})
            gen = 1e3 / pipe["monolithic_tokens_per_s"] if pipe.get("monolithic_tokens_per_s") else None
            out += ["### A stage's forward, opened up\n", stageprof_part(k, v, gen)]
    out.append("### Load on the whole system\n")
    out.append(load_part(res["load"]) if "load" in res else "_Not measured: `bench/results/load.json` is missing._\n")
    out.append("### Hosts across a network\n")
    out.append(wan_part(res["wan"]) if "wan" in res else "_Not measured: `bench/results/wan.json` is missing._\n")
    return "\n".join(out)


def scale_bullets(res: dict) -> list[str]:
    out = []
    for stem, c in sorted((k, v) for k, v in res.items() if k.startswith("concurrency-") and goal(v)):
        r, (text, met) = c["sessions"]["16"], goal(c)
        out.append(f"- Concurrency `{stem}` ({text}): {'met' if met else '**missed**'} — "
                   f"{r['vs_monolithic']} ({r['tokens_per_s']} vs {r['monolithic_tokens_per_s']} tokens/s).")
    ld = res.get("load")
    if ld:
        failed = [k.replace("_", " ") for k, ok in ld.get("checks", {}).items() if not ok]
        verdict = "every check passed" if ld["all_checks_pass"] else (
            "checks that did not pass: **" + ", ".join(failed) + "**" if failed else "**a check did not pass**")
        out.append(f"- Load ({ld['jobs']} jobs): {ld['jobs_per_minute']} jobs/min; {verdict}; settled p50/p95 "
                   f"{ld['settle_s']['p50']}/{ld['settle_s']['p95']} s.")
    w = res.get("wan")
    if w:
        keys = sorted(w["rtt_ms"], key=float)
        out.append(f"- Hosts across a network: one session vs its limit "
                   f"{', '.join(str(w['rtt_ms'][k].get('vs_limit')) for k in keys)} at RTT {', '.join(keys)} ms "
                   f"({'met' if w['targets_met']['single'] else '**missed**'}); aggregate at {keys[-1]} ms "
                   f"{w['rtt_ms'][keys[-1]].get('aggregate_vs_smallest_rtt')} of the smallest RTT "
                   f"({'met' if w['targets_met']['aggregate'] else '**missed**'}).")
    return out
