"""Tables and the issue's ratios, from the medians bench_full.py gathered."""

from __future__ import annotations

from typing import Any

ORDER = ["bare", "modelport", "modelport-python", "router", "router-fastpath", "kserve", "mlserver"]
HEADLINE_CONCURRENCY = 32


def _key(cell: dict[str, Any]) -> tuple[int, int, str, int]:
    rank = ORDER.index(cell["target"]) if cell["target"] in ORDER else len(ORDER)
    return cell["batch"], cell["concurrency"], cell["driver"], rank


def _find(cells: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for cell in cells:
        if all(cell[k] == v for k, v in match.items()):
            return cell
    return None


def print_model_report(section: dict[str, Any]) -> None:
    floor = section["floor"]
    best = max(floor.values())
    cells = sorted(section["cells"], key=_key)
    print(
        f"\n{section['model']}: floor {floor[min(floor)]:,.0f}/s at batch 1, {best:,.0f}/s at "
        f"its best batch; load average {section['load'][0]} -> {section['load'][1]}"
    )
    print(
        f"{'target':10} {'driver':13} {'b':>2} {'conc':>4} {'infer/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'cpu µs/req':>10} {'router µs':>9} {'/floor':>6} {'/bare':>6} {'err':>4}"
    )
    for cell in cells:
        bare = _find(
            cells,
            target="bare",
            driver=cell["driver"],
            batch=cell["batch"],
            concurrency=cell["concurrency"],
        )
        vs_bare = f"{cell['infer_per_s'] / bare['infer_per_s']:.2f}" if bare else "-"
        router = cell["cpu_us"].get("router")
        print(
            f"{cell['target']:10} {cell['driver']:13} {cell['batch']:>2} {cell['concurrency']:>4} "
            f"{cell['infer_per_s']:>9,.0f} {cell['p50_ms']:>8.2f} {cell['p99_ms']:>8.2f} "
            f"{cell['cpu_us'].get('server', 0):>10.0f} "
            f"{'' if router is None else f'{router:.0f}':>9} "
            f"{cell['infer_per_s'] / best:>6.2f} {vs_bare:>6} {cell['errors']:>4}"
        )


def summary_lines(sections: list[dict[str, Any]]) -> list[str]:
    lines = []
    c = HEADLINE_CONCURRENCY
    for section in sections:
        model, cells = section["model"], section["cells"]
        best = max(section["floor"].values())
        for driver in ("perf_analyzer", "loadtest"):
            served = _find(cells, target="modelport", driver=driver, batch=1, concurrency=c)
            bare = _find(cells, target="bare", driver=driver, batch=1, concurrency=c)
            if served and bare:
                lines.append(
                    f"{model} c={c} {driver}: served/bare {served['infer_per_s'] / bare['infer_per_s']:.2f}"
                    f", served/floor {served['infer_per_s'] / best:.2f}"
                )
            elif served:
                lines.append(
                    f"{model} c={c} {driver}: served/floor {served['infer_per_s'] / best:.2f}"
                )
        served = _find(cells, target="modelport", driver="loadtest", batch=1, concurrency=c)
        for peer in ("kserve", "mlserver"):
            other = _find(cells, target=peer, driver="loadtest", batch=1, concurrency=c)
            if served and other:
                lines.append(
                    f"{model} c={c} p99: modelport {served['p99_ms']:.1f} ms vs {peer} "
                    f"{other['p99_ms']:.1f} ms; throughput {served['infer_per_s'] / other['infer_per_s']:.2f}x"
                )
        bare = _find(cells, target="bare", driver="loadtest", batch=1, concurrency=c)
        for name in ("router", "router-fastpath"):
            routed = _find(cells, target=name, driver="loadtest", batch=1, concurrency=c)
            if routed and bare and bare["cpu_us"].get("server"):
                ratio = routed["cpu_us"]["router"] / bare["cpu_us"]["server"]
                lines.append(
                    f"{model} c={c} {name} CPU per request / bare server's: {ratio:.2f} "
                    f"({routed['cpu_us']['router']:.0f} vs {bare['cpu_us']['server']:.0f} µs)"
                )
    return lines


def print_summary(sections: list[dict[str, Any]]) -> None:
    print("\nThe issue's ratios (batch-1 requests):")
    for line in summary_lines(sections):
        print("  " + line)
