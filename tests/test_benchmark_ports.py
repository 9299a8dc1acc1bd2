"""No benchmark's fixed port default lies where the tests take their ports, nor in the kernel's
ephemeral range, nor on another benchmark's.

tests/port_blocks.py hands every test process blocks of ports from 10000 up to the ephemeral
range (Linux: 32768-60999, where port-0 binds and outgoing sockets land). A benchmark whose relay
binds a fixed range there, call by call, takes ports a test run beside it has just claimed
(session 29: sip_calls.py's 14000-17999 and a test's block 15900-15999 failed
``test_media_ports``). The benchmarks take such ranges as port blocks under the tests' lock
(benchmarks/bench_ports.py); a fixed default is only for ports above the ephemeral range.

Read from the source (ast), without importing the benchmarks (they import trio, pylibsrtp ...):
a fixed port default is an int literal from 1024 to 65535, a ``"LOW-HIGH"`` string or a
``(LOW, HIGH)`` pair (alone or inside a tuple, dict or call) assigned at module or class level
to a name containing ``port``, or the default of an ``add_argument`` option containing
``port``. An int assigned to a name ending in ``_PORTS`` or containing ``PER_`` is a count of
ports, not a port; a name ending in ``_BASE`` starts a block of 100 (one unit of
tests/port_blocks.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.port_blocks import LOW

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TESTS_REGION = range(LOW, 32768)  # port_blocks never claims at or above 32768
EPHEMERAL = range(32768, 61000)  # Linux's default ip_local_port_range
BASE_SPAN = 100


def _machine_ephemeral() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return EPHEMERAL


def _ports_in(node: ast.AST, name: str) -> list[range]:
    """The fixed ports a value assigned to ``name`` holds."""
    if (
        isinstance(node, ast.Tuple)
        and len(node.elts) == 2
        and all(isinstance(e, ast.Constant) and type(e.value) is int for e in node.elts)
    ):
        low, high = (e.value for e in node.elts)  # type: ignore[attr-defined]
        if 1024 <= low < high <= 65535:
            return [range(low, high + 1)]  # (LOW, HIGH)
    found = []
    for value in ast.walk(node):
        if not isinstance(value, ast.Constant):
            continue
        if isinstance(value.value, bool):
            continue
        if isinstance(value.value, int) and 1024 <= value.value <= 65535:
            upper = name.upper()
            if upper.endswith("_PORTS") or "PER_" in upper:
                continue  # a count of ports
            span = BASE_SPAN if upper.endswith("_BASE") else 1
            found.append(range(value.value, value.value + span))
        elif isinstance(value.value, str):
            low, sep, high = value.value.partition("-")
            if sep and low.isdigit() and high.isdigit():
                found.append(range(int(low), int(high) + 1))
    return found


def _targets(node: ast.Assign | ast.AnnAssign) -> list[tuple[str, ast.AST]]:
    """(name, value) of each name assigned, tuples unpacked pairwise."""
    if node.value is None:
        return []
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    pairs: list[tuple[str, ast.AST]] = []
    for target in targets:
        if isinstance(target, ast.Name):
            pairs.append((target.id, node.value))
        elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
            for element, value in zip(target.elts, node.value.elts, strict=False):
                if isinstance(element, ast.Name):
                    pairs.append((element.id, value))
    return pairs


def fixed_port_defaults(path: Path) -> list[tuple[str, range]]:
    """("file:line name", ports) of every fixed port default in one benchmark."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, range]] = []
    # Module and class bodies: what a function computes at run time is no default.
    bodies = [tree.body] + [node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    for body in bodies:
        for node in body:
            if not isinstance(node, ast.Assign | ast.AnnAssign):
                continue
            for name, value in _targets(node):
                if "port" in name.lower():
                    where = f"{path.name}:{node.lineno} {name}"
                    found += [(where, ports) for ports in _ports_in(value, name)]
    constants = {
        name: value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for name, value in _targets(node)
    }
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            continue
        options = [a.value for a in node.args if isinstance(a, ast.Constant)]
        option = next((o for o in options if isinstance(o, str) and "port" in o.lower()), None)
        if option is None:
            continue
        for keyword in node.keywords:
            if keyword.arg != "default":
                continue
            value = keyword.value
            name = option.lstrip("-").replace("-", "_")
            if isinstance(value, ast.Name) and value.id in constants:
                name, value = value.id, constants[value.id]
            where = f"{path.name}:{node.lineno} {option}"
            found += [(where, ports) for ports in _ports_in(value, name)]
    return found


def _overlap(a: range, b: range) -> bool:
    return a.start < b.stop and b.start < a.stop


def test_the_walk_finds_fixed_port_defaults(tmp_path: Path) -> None:
    """The reader sees each form a default takes (else the test below would pass vacuously)."""
    sample = """\
NG_PORT = 32230
PORT_MIN, PORT_MAX = 25000, 29999
PORTS = (15000, 31999)
MEDIA_PORTS = 4000
PORTS_PER_CALL = 4
SIP_PORT_BASE = 62060
RANGE_PORTS = "20000-24999"
class Engine:
    port_min: int = 25000
def main(parser):
    parser.add_argument("--media-ports", default="14000-17999")
    parser.add_argument("--sip-port-base", type=int, default=SIP_PORT_BASE)
    parser.add_argument("--calls", type=int, default=20000)
"""
    path = tmp_path / "sample.py"
    path.write_text(sample)
    found = [(where.split(" ", 1)[1], ports) for where, ports in fixed_port_defaults(path)]
    assert found == [
        ("NG_PORT", range(32230, 32231)),
        ("PORT_MIN", range(25000, 25001)),
        ("PORT_MAX", range(29999, 30000)),
        ("PORTS", range(15000, 32000)),
        ("SIP_PORT_BASE", range(62060, 62160)),
        ("RANGE_PORTS", range(20000, 25000)),
        ("port_min", range(25000, 25001)),
        ("--media-ports", range(14000, 18000)),
        ("--sip-port-base", range(62060, 62160)),
    ]


def test_no_benchmark_port_default_is_in_the_tests_region_or_the_ephemeral_range() -> None:
    defaults = [
        item for path in sorted(BENCHMARKS.glob("*.py")) for item in fixed_port_defaults(path)
    ]
    assert defaults, "the walk found no fixed port default at all (sip_calls.py has one)"
    forbidden = {
        "where tests/port_blocks.py claims test ports": TESTS_REGION,
        "the ephemeral range": EPHEMERAL,
        "this machine's ephemeral range": _machine_ephemeral(),
    }
    clashes = [
        f"{where} {ports.start}-{ports.stop - 1} is in {what} ({region.start}-{region.stop - 1})"
        for where, ports in defaults
        for what, region in forbidden.items()
        if _overlap(ports, region)
    ]
    assert clashes == [], "take such ports from benchmarks/bench_ports.py:\n" + "\n".join(clashes)
    # Two benchmarks' fixed ports apart, so that they can run at once.
    shared = [
        f"{a} and {b}"
        for i, (a, ports_a) in enumerate(defaults)
        for b, ports_b in defaults[i + 1 :]
        if a.split(":")[0] != b.split(":")[0] and _overlap(ports_a, ports_b)
    ]
    assert shared == [], shared
