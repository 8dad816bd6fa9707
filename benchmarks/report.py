"""The results section of docs/benchmarks.md, from a pytest-benchmark JSON file.

    .venv/bin/pytest benchmarks --benchmark-only --benchmark-group-by=group \\
        --benchmark-json=bench.json
    .venv/bin/python benchmarks/report.py bench.json > results.md

Prints Markdown: medians per engine with the same-run ratios to legacy-blob and to
the raw-driver baseline, storage, peak memory, concurrency, and every target of the
redesign as met or not.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from statestore.cli.bench import SCENARIO_NAMES

ENGINES = {"sqlite": ("sqlite", "SQLite"), "postgresql": ("postgres", "PostgreSQL")}
SCENARIO_ORDER = SCENARIO_NAMES

Key = tuple[str, str, int]  # scenario, target, size


def load(path: Path) -> tuple[dict[str, Any], dict[Key, dict[str, Any]]]:
    document = orjson.loads(path.read_bytes())
    results: dict[Key, dict[str, Any]] = {}
    for bench in document["benchmarks"]:
        extra = bench["extra_info"]
        if "scenario" not in extra:  # not a scenario: see framework_table
            continue
        size = extra.get("size", extra.get("users", 0))
        results[(extra["scenario"], extra["target"], size)] = {
            "median": bench["stats"]["median"],
            "rounds": bench["stats"]["rounds"],
            "extra": extra,
        }
    return document, results


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1000
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    if value >= 100:
        return f"{value:,.0f} ms"
    return f"{value:.3g} ms"


def kib(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1024 * 1024:
        return f"{value / 1024 / 1024:,.1f} MiB"
    return f"{value / 1024:,.0f} KiB"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def speedup(value: float | None, legacy: float | None) -> str:
    if value is None or not legacy:
        return "-"
    return f"{legacy / value:,.1f}x faster" if value <= legacy else f"{value / legacy:.1f}x slower"


def timing_tables(results: dict[Key, dict[str, Any]], sizes: list[int]) -> list[str]:
    lines = []
    for engine, (name, title) in ENGINES.items():
        legacy_t, raw_t = f"legacy-blob[{engine}]", f"raw[{engine}]"
        if not any(k[1] == name for k in results):
            continue
        lines += [
            f"**{title}** (median per operation; `grow` is the whole run from 0 to N):",
            "",
            f"| scenario | N | legacy-blob | {name} | raw driver | {name} vs legacy | "
            f"{name} / raw |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for scenario in SCENARIO_ORDER:
            for size in sizes:
                ours = results.get((scenario, name, size))
                if ours is None:
                    continue
                legacy = results.get((scenario, legacy_t, size))
                raw = results.get((scenario, raw_t, size))
                ours_s = ours["median"]
                legacy_s = legacy["median"] if legacy else None
                raw_s = raw["median"] if raw else None
                lines.append(
                    f"| {scenario} | {size:,} | {ms(legacy_s) if legacy else 'not run¹'} | "
                    f"{ms(ours_s)} | {ms(raw_s)} | {speedup(ours_s, legacy_s)} | "
                    f"{ratio(ours_s, raw_s)} |"
                )
        lines.append("")
    return lines


def storage_table(results: dict[Key, dict[str, Any]], sizes: list[int]) -> list[str]:
    lines = [
        "| engine | N | JSON payload | legacy-blob | normalized | raw rows | normalized / raw | "
        "after grow: legacy-blob | after grow: normalized |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, (name, title) in ENGINES.items():
        for size in sizes:

            def extra(scenario: str, target: str, key: str) -> float | None:
                found = results.get((scenario, target, size))  # noqa: B023
                return None if found is None else found["extra"].get(key)

            live = "bytes_per_conversation"
            ours = extra("save_full", name, live)
            if ours is None:
                continue
            raw = extra("save_full", f"raw[{engine}]", live)
            payload = extra("save_full", name, "document_bytes")
            lines.append(
                f"| {title} | {size:,} | {kib(payload)} "
                f"| {kib(extra('save_full', f'legacy-blob[{engine}]', live))} "
                f"| {kib(ours)} | {kib(raw)} | {ratio(ours, raw)} | "
                f"{kib(extra('grow', f'legacy-blob[{engine}]', 'bytes_after_grow'))} | "
                f"{kib(extra('grow', name, 'bytes_after_grow'))} |"
            )
    return lines


def memory_table(results: dict[Key, dict[str, Any]], sizes: list[int]) -> list[str]:
    lines = [
        "| engine | N | load_full: legacy-blob | load_full: normalized | "
        "load_turn: legacy-blob | load_turn: normalized | load_turn normalized / legacy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, (name, title) in ENGINES.items():
        for size in sizes:
            peak: dict[tuple[str, str], float | None] = {}
            for scenario in ("load_full", "load_turn"):
                for label, target in (("legacy", f"legacy-blob[{engine}]"), ("ours", name)):
                    found = results.get((scenario, target, size))
                    peak[(scenario, label)] = (
                        None if found is None else found["extra"].get("peak_memory_bytes")
                    )
            if peak[("load_turn", "ours")] is None:
                continue
            lines.append(
                f"| {title} | {size:,} | {kib(peak[('load_full', 'legacy')])} | "
                f"{kib(peak[('load_full', 'ours')])} | {kib(peak[('load_turn', 'legacy')])} | "
                f"{kib(peak[('load_turn', 'ours')])} | "
                f"{_pct(_div(peak[('load_turn', 'ours')], peak[('load_turn', 'legacy')]))} |"
            )
    return lines


def concurrency_table(results: dict[Key, dict[str, Any]]) -> list[str]:
    lines = [
        "| backend | users | turns/s | p50 | p99 | errors | lost writes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = sorted(
        (k for k in results if k[0] == "concurrency"), key=lambda k: (k[1].split("[")[-1], k)
    )
    for key in rows:
        e = results[key]["extra"]
        lines.append(
            f"| {key[1]} | {key[2]} | {e['turns_per_s']:,.0f} | {ms(e['p50_ms'] / 1000)} | "
            f"{ms(e['p99_ms'] / 1000)} | {e['errors']} | {e['lost_writes']} |"
        )
    return lines


def targets(results: dict[Key, dict[str, Any]], sizes: list[int]) -> list[str]:
    """Every target of the redesign, as measured, met or not."""
    lines = []
    n = 1_000 if 1_000 in sizes else sizes[-1]

    def median(scenario: str, target: str, size: int = n) -> float | None:
        found = results.get((scenario, target, size))
        return None if found is None else float(found["median"])

    def extra(scenario: str, target: str, key: str, size: int = n) -> float | None:
        found = results.get((scenario, target, size))
        return None if found is None else found["extra"].get(key)

    def line(text: str, value: float | None, ok: Callable[[float], bool]) -> None:
        verdict = "not measured" if value is None else ("met" if ok(value) else "**not met**")
        lines.append(f"- {text}: {verdict}")

    for engine, (name, title) in ENGINES.items():
        raw, legacy = f"raw[{engine}]", f"legacy-blob[{engine}]"
        if median("append_one", name) is None:
            continue

        def per_size(scenario: str, base: str) -> str:
            values = [
                ratio(median(scenario, name, s), median(scenario, base, s))  # noqa: B023
                for s in sizes
            ]
            return ", ".join(f"{s:,}: {v}" for s, v in zip(sizes, values, strict=True))

        for scenario, limit in (("append_one", 1.6), ("load_window", 2.0)):
            value = _div(median(scenario, name), median(scenario, raw))
            line(
                f"{title} `{scenario}` within {limit}x of raw: {_x(value)} at N={n:,} "
                f"(by size {per_size(scenario, raw)})",
                value,
                lambda v, limit=limit: v <= limit,
            )
        for scenario in ("load_full", "save_full"):
            value = _div(median(scenario, name), median(scenario, legacy))
            line(
                f"{title} `{scenario}` no slower than legacy-blob: {_x(value)} of legacy's "
                f"time at N={n:,} (by size {per_size(scenario, legacy)})",
                value,
                lambda v: v <= 1.0,
            )
        grow = _div(median("grow", legacy, 1_000), median("grow", name, 1_000))
        line(
            f"{title} `grow` to 1,000 at least 10x faster than legacy-blob: {_x(grow, 1)} faster",
            grow,
            lambda v: v >= 10,
        )
        stored = _div(
            extra("save_full", name, "bytes_per_conversation"),
            extra("save_full", raw, "bytes_per_conversation"),
        )
        payload = _div(
            extra("save_full", name, "bytes_per_conversation"),
            extra("save_full", name, "document_bytes"),
        )
        line(
            f"{title} bytes per conversation within 1.25x of the raw rows: {_x(stored)} "
            f"of the raw driver's rows on the same schema at N={n:,} ({_x(payload)} of the "
            "JSON payload)",
            stored,
            lambda v: v <= 1.25,
        )
        memory = _div(
            extra("load_turn", name, "peak_memory_bytes"),
            extra("load_turn", legacy, "peak_memory_bytes"),
        )
        line(
            f"{title} peak memory of `load_turn` at most 30% of legacy-blob's: "
            f"{_pct(memory)} at N={n:,}",
            memory,
            lambda v: v <= 0.30,
        )
    pg = results.get(("concurrency", "postgres", 100))
    if pg is not None:
        e = pg["extra"]
        bad = e["errors"] + e["lost_writes"]
        line(
            f"100 concurrent users on PostgreSQL, zero errors and zero lost writes: "
            f"{e['errors']} errors, {e['lost_writes']} lost writes, "
            f"{e['turns_per_s']:,.0f} turns/s",
            float(bad),
            lambda v: v == 0,
        )
    return lines


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if value < 0.1 else f"{value:.0%}"


def framework_table(document: dict[str, Any]) -> list[str]:
    """The OpenAI Agents SDK turn (benchmarks/test_openai_agents_session.py): each
    session's median, and its ratio to statestore's."""
    turns = {
        b["extra_info"]["session"]: b["stats"]["median"]
        for b in document["benchmarks"]
        if b["group"] == "openai-agents-turn"
    }
    ours = turns.get("statestore")
    if not turns or ours is None:
        return ["(not run)"]
    names = {
        "statestore": "StatestoreSession (sqlite backend)",
        "sdk": "SDK SQLiteSession (synchronous=FULL, its default)",
        "sdk-normal": "SDK SQLiteSession, synchronous=NORMAL (statestore's durability)",
    }
    lines = ["| session | median turn | vs StatestoreSession |", "|---|---:|---:|"]
    for key, median in sorted(turns.items(), key=lambda item: item[1]):
        lines.append(f"| {names.get(key, key)} | {ms(median)} | {median / ours:.2f}x |")
    return lines


def render(path: Path) -> str:
    document, results = load(path)
    sizes = sorted({k[2] for k in results if k[0] != "concurrency"})
    info = document["machine_info"]
    seconds = sum(b["stats"]["total"] for b in document["benchmarks"])  # timed rounds only
    cpu = info.get("cpu", {}).get("brand_raw", "")
    lines = [
        f"Measured {document['datetime'][:16].replace('T', ' ')} UTC on {info.get('nproc')} "
        f"cores ({cpu}), Python {info['python_version']}, PostgreSQL "
        f"{info.get('postgresql') or 'not available'}; {len(document['benchmarks'])} "
        f"benchmarks, {seconds:,.0f} s of timed rounds.",
        "",
        "### Targets",
        "",
        *targets(results, sizes),
        "",
        "### Time",
        "",
        *timing_tables(results, sizes),
        "¹ legacy-blob grows to 1,000 messages at most: each append rewrites the whole "
        "document, so growing to 10,000 would take many minutes.",
        "",
        "### Storage per conversation",
        "",
        "Live: one conversation saved whole (`save_full`). After grow: the conversation "
        "grown one append at a time, as left (legacy-blob keeps every snapshot).",
        "",
        *storage_table(results, sizes),
        "",
        "### Peak Python memory of a load (tracemalloc)",
        "",
        *memory_table(results, sizes),
        "",
        "### Concurrent users",
        "",
        "Each simulated user has a conversation of its own (100 messages to start) and "
        "runs 10 turns: `load_turn`, then one `update_state` appending two messages and "
        "setting step_count. Lost writes: appended messages missing at the end.",
        "",
        *concurrency_table(results),
        "",
        "### An OpenAI Agents SDK turn",
        "",
        "`add_items` of a turn's two items, then `get_items(limit=20)`, on a session of "
        "100 items, on SQLite (`benchmarks/test_openai_agents_session.py`).",
        "",
        *framework_table(document),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("json", type=Path, help="a --benchmark-json file")
    args = parser.parse_args()
    print(render(args.json))


if __name__ == "__main__":
    main()
