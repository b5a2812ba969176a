"""A catalogue of malformed suites, as a hostile user or an unlucky machine would write them, for the fault drill.

Each `Drill` is a suite file's bytes (or a way to make a path that is not a readable suite: a folder, a missing
file, a device), the key path its error must name (None where the problem has no key: bad syntax, a binary
file) and a fragment of what the message must offer as allowed there. `stage` says which stage refuses it:
`schema` (without torch) or `registry` (names checked against the registered mechanisms).

Imported by name (`from drill_suites import DRILLS`), like `suite_helpers`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attnbench.suite.reader import MAX_SUITE_BYTES

BASE = """\
name: drill
mechanisms:
  - name: mha
  - name: gqa
    params: {G: 2}
sweep: {T: 32, H: 4, d: 8}
"""

BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@dataclass(frozen=True)
class Drill:
    """One malformed suite and what its error must say."""

    name: str
    content: bytes | Callable[[Path], Path]  # the file's bytes, or a function making the path to pass
    key: str | None = None  # the key path the message names (None: a problem of the file, not of a key)
    allowed: str | None = None  # a fragment of the message's "allowed" part
    stage: str = "schema"

    def path(self, folder: Path) -> Path:
        """The suite path to give attnbench, made under `folder`."""
        if callable(self.content):
            return self.content(folder)
        path = folder / "suite.yaml"
        path.write_bytes(self.content)
        return path


DRILLS: list[Drill] = []


def _drill(name: str, content: str | bytes | Callable[[Path], Path], key=None, allowed=None, stage="schema"):
    if isinstance(content, str):
        content = content.encode()
    DRILLS.append(Drill(name, content, key, allowed, stage))


def _edit(old: str, new: str) -> str:
    """BASE with `old` replaced (which must occur in it)."""
    assert old in BASE, old
    return BASE.replace(old, new)


def _folder(folder: Path) -> Path:
    (folder / "suite.yaml").mkdir()
    return folder / "suite.yaml"


def _link_loop(folder: Path) -> Path:
    os.symlink(folder / "loop.yaml", folder / "loop.yaml")
    return folder / "loop.yaml"


# The file itself: nothing there, not text, too large, not a file.
_drill("empty file", b"")
_drill("blank lines", b"\n\n   \n")
_drill("only a comment", b"# a suite\n")
_drill("a list", b"- name: mha\n")
_drill("a string", b"just words\n")
_drill("a number", b"42\n")
_drill("null", b"~\n")
_drill("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
_drill("utf-16", BASE.encode("utf-16"))
_drill("latin-1", (BASE + "description: café\n").encode("latin-1"))
_drill("truncated utf-8", BASE.encode() + "description: é".encode()[:-1])
_drill("too large", b"name: drill\ndescription: " + b"x" * (MAX_SUITE_BYTES + 10) + b"\n")
_drill("one byte too large", b"# " + b"x" * (MAX_SUITE_BYTES - 2) + b"\n")
_drill("50 MB", b"a: " + b"y" * (50 << 20))
_drill("a folder", _folder)
_drill("missing file", lambda folder: folder / "missing.yaml")
_drill("missing bare name", lambda folder: folder / "no-such-suite")
_drill("a device", lambda folder: Path("/dev/zero"))
_drill("a symlink loop", _link_loop)

# YAML that does not parse, or asks for more than plain data.
_drill("unclosed list", BASE + "modes: [fwd, bwd\n")
_drill("unclosed mapping", _edit("{T: 32, H: 4, d: 8}", "{T: 32, H: 4, d: 8"))
_drill("unclosed quote", BASE + 'description: "never ends\n')
_drill("bad indentation", BASE + "timing:\n  rep_ms: 5\n warmup_ms: 1\n")
_drill("a tab", BASE + "\tmodes: fwd\n")
_drill("two documents", BASE + "---\nname: other\n")
_drill("stray colon", BASE + "modes: fwd: bwd\n")
_drill("bad escape", BASE + 'description: "\\q"\n')
_drill("undefined alias", BASE + "modes: *nowhere\n")
_drill("python tag", BASE + "description: !!python/object/apply:os.system [echo]\n")
_drill("local tag", BASE + "description: !secret x\n")
_drill("binary tag", BASE + "description: !!binary aGVsbG8=\n")
_drill("set tag", BASE + "modes: !!set {fwd}\n")
_drill("timestamp tag", BASE + "description: !!timestamp 2024-01-01\n")
_drill("unreadable int tag", _edit("T: 32", "T: !!int many"))
_drill("unreadable bool tag", BASE + "causal: !!bool maybe\n")
_drill("5000-digit integer", _edit("T: 32", "T: " + "9" * 5000))
_drill("a list as a key", BASE + "? [a, b]\n: 1\n")

# Bombs: aliases that expand without end, structures that contain themselves, nesting without end.
_drill("billion laughs", BOMB, key="e", allowed="at most 50000 values")
_drill("billion laughs in a suite", BASE + "description:\n  " + BOMB.replace("\n", "\n  "), key="description")
_drill(
    "a bomb in a device section",
    BASE + "devices:\n  cpu:\n    x:\n      " + BOMB.replace("\n", "\n      "),
    key="devices",
)
_drill("recursive alias", BASE + "modes: &loop [*loop]\n", key="modes", allowed="aliases of values defined before")
_drill("recursive mapping", BASE + "timing: &t {rep_ms: *t}\n", key="timing")
_drill("deep flow nesting", BASE + "description: " + "[" * 60 + "]" * 60 + "\n", key="description")
_drill("deep block nesting", BASE + "".join("  " * level + f"k{level}:\n" for level in range(40)) + "  " * 40 + "v\n")
_drill("very deep nesting", BASE + "description: " + "[" * 5000 + "]" * 5000 + "\n")
_drill("300000 values", _edit("T: 32", "T: [" + ",".join(["1"] * 300_000) + "]"), key="sweep")

# A key given twice: both lines named.
_drill("duplicate top-level key", BASE + "name: again\n", key="name", allowed="each key once")
_drill("duplicate sweep", BASE + "sweep: {T: 8, H: 2, d: 8}\n", key="sweep")
_drill("duplicate axis on one line", _edit("T: 32, H: 4", "T: 32, T: 4"), key="sweep.T")
_drill("duplicate param", _edit("{G: 2}", "{G: 2, G: 4}"), key="mechanisms[1].params.G")
_drill("duplicate timing key", BASE + "timing:\n  rep_ms: 5\n  rep_ms: 6\n", key="timing.rep_ms")
_drill("duplicate device", BASE + "devices:\n  cpu: {}\n  cpu: {}\n", key="devices.cpu")
_drill("duplicate device key", BASE + "devices: {cpu: {sweep: {T: 8, T: 16}}}\n", key="devices.cpu.sweep.T")

# Keys that are not names, and unknown keys at every level.
_drill("integer key", BASE + "1: one\n", allowed="names; quote a key")
_drill("null key", BASE + "~: nothing\n")
_drill("boolean key", BASE + "yes: please\n")
_drill("integer param key", _edit("{G: 2}", "{2: 2}"), key="mechanisms[1].params", allowed="names")
_drill("unknown top-level key", BASE + "colour: blue\n", key="colour", allowed="name, description, mechanisms")
_drill("unknown entry key", _edit("- name: mha", "- name: mha\n    impl: sdpa"), key="mechanisms[0].impl")
_drill("unknown axis", _edit("d: 8", "d: 8, L: 4"), key="sweep.L", allowed="T, H, d, D, B, tokens")
_drill("unknown timing key", BASE + "timing: {reps: 3}\n", key="timing.reps", allowed="warmup_ms, rep_ms")
_drill("unknown limits key", BASE + "limits: {timeout: 3}\n", key="limits.timeout", allowed="case_timeout_s")
_drill("unknown device", BASE + "devices: {tpu: {}}\n", key="devices.tpu", allowed="cpu, cuda")
_drill("unknown device key", BASE + "devices: {cpu: {sweeps: {}}}\n", key="devices.cpu.sweeps", allowed="sweep")
_drill("unknown device axis", BASE + "devices: {cuda: {sweep: {L: 2}}}\n", key="devices.cuda.sweep.L", allowed="T, H")
_drill("unknown device timing key", BASE + "devices: {cpu: {timing: {x: 1}}}\n", key="devices.cpu.timing.x")
_drill("mechanisms per device", BASE + "devices: {cpu: {mechanisms: []}}\n", key="devices.cpu.mechanisms")
_drill("unknown param", _edit("{G: 2}", "{G: 2, K: 1}"), key="mechanisms[1].params.K", allowed="G (", stage="registry")

# Values of the wrong type.
_drill("name a number", _edit("name: drill", "name: 7"), key="name", allowed="letters, digits")
_drill("name a list", _edit("name: drill", "name: [a]"), key="name")
_drill("description a mapping", BASE + "description: {a: 1}\n", key="description", allowed="any text")
_drill(
    "mechanisms a mapping", _edit("  - name: mha\n", "  mha: {}\n").replace("  - name: gqa\n    params: {G: 2}\n", "")
)
_drill("mechanisms a string", "name: drill\nmechanisms: mha\nsweep: {T: 32, H: 4, d: 8}\n", key="mechanisms")
_drill("entry a string", _edit("- name: mha", "- mha"), key="mechanisms[0]", allowed="")
_drill("entry name a number", _edit("- name: mha", "- name: 5"), key="mechanisms[0].name")
_drill("params a list", _edit("{G: 2}", "[G, 2]"), key="mechanisms[1].params", allowed="own parameters")
_drill("impls a number", BASE + "impls: 3\n", key="impls", allowed="implementation names")
_drill("modes a number", BASE + "modes: 1\n", key="modes", allowed="fwd")
_drill("levels a mapping", BASE + "levels: {core: 1}\n", key="levels", allowed="'core' or 'layer'")
_drill("causal a string", BASE + "causal: sometimes\n", key="causal", allowed="true, false")
_drill("sweep a list", _edit("{T: 32, H: 4, d: 8}", "[32, 4, 8]"), key="sweep", allowed="the shape axes")
_drill("T a string", _edit("T: 32", "T: abc"), key="sweep.T", allowed="an integer from 1 to 16777216")
_drill("T a float", _edit("T: 32", "T: 32.5"), key="sweep.T", allowed="an integer from 1")
_drill("T a quoted number", _edit("T: 32", 'T: "32"'), key="sweep.T")
_drill("T true", _edit("T: 32", "T: true"), key="sweep.T")
_drill("T nested list", _edit("T: 32", "T: [[32]]"), key="sweep.T[0]")
_drill("H null", _edit("H: 4", "H: null"), key="sweep.H", allowed="query heads")
_drill("timing a list", BASE + "timing: [1, 2]\n", key="timing", allowed="TimingSettings")
_drill("limits a string", BASE + "limits: none\n", key="limits", allowed="Limits")
_drill("flush_l2 a number", BASE + "timing: {flush_l2: 1}\n", key="timing.flush_l2", allowed="true or false")
_drill("check_numerics a string", BASE + "limits: {check_numerics: yes please}\n", key="limits.check_numerics")
_drill("min_reps a float", BASE + "timing: {min_reps: 2.5}\n", key="timing.min_reps", allowed="an integer from 1")
_drill("warmup_ms a string", BASE + "timing: {warmup_ms: soon}\n", key="timing.warmup_ms", allowed="a number from 0")
_drill("case_timeout_s a bool", BASE + "limits: {case_timeout_s: true}\n", key="limits.case_timeout_s")
_drill("devices a list", BASE + "devices: [cpu]\n", key="devices", allowed="cpu: {...}")
_drill("device section a list", BASE + "devices: {cpu: [1]}\n", key="devices.cpu", allowed="keys of the suite")
_drill("param a mapping", _edit("{G: 2}", "{G: {a: 1}}"), key="mechanisms[1].params.G", stage="registry")
_drill(
    "param a word", _edit("{G: 2}", "{G: two}"), key="mechanisms[1].params.G", allowed="an integer", stage="registry"
)

# Values that cannot work.
_drill("T zero", _edit("T: 32", "T: 0"), key="sweep.T", allowed="an integer from 1 to 16777216")
_drill("T negative", _edit("T: 32", "T: -8"), key="sweep.T")
_drill("T 2**24 + 1", _edit("T: 32", f"T: {2**24 + 1}"), key="sweep.T", allowed="16777216")
_drill("T 2**70", _edit("T: 32", f"T: {2**70}"), key="sweep.T", allowed="16777216")
_drill("T one bad in a list", _edit("T: 32", "T: [32, 0]"), key="sweep.T[1]")
_drill("H zero", _edit("H: 4", "H: 0"), key="sweep.H")
_drill("H 5000", _edit("H: 4", "H: 5000"), key="sweep.H", allowed="an integer from 1 to 4096")
_drill("d zero", _edit("d: 8", "d: 0"), key="sweep.d")
_drill("d 2**15", _edit("d: 8", "d: 32768"), key="sweep.d", allowed="16384")
_drill("D 2**21", _edit("d: 8", "D: 2097152"), key="sweep.D", allowed="1048576")
_drill("B zero", _edit("d: 8", "d: 8, B: 0"), key="sweep.B")
_drill("B 2**21", _edit("d: 8", "d: 8, B: 2097152"), key="sweep.B", allowed="1048576")
_drill("tokens zero", _edit("d: 8", "d: 8, tokens: 0"), key="sweep.tokens")
_drill("T empty", _edit("T: 32", "T: []"), key="sweep.T", allowed="non-empty list")
_drill(
    "shape past memory", _edit("T: 32, H: 4, d: 8", "T: 16777216, H: 4096, d: 16384"), key="sweep.T", allowed="2**40"
)
_drill(
    "too many cases",
    _edit("T: 32, H: 4", "T: [" + ",".join(str(n) for n in range(1, 3001)) + "], H: [1, 2, 4, 8, 16]")
    + "modes: [fwd, bwd]\ncausal: [false, true]\n",
    allowed="at most 100000 cases",
)
_drill("max_reps zero", BASE + "timing: {max_reps: 0}\n", key="timing.max_reps", allowed="an integer from 1 to 100000")
_drill("max_reps a million", BASE + "timing: {max_reps: 1000000}\n", key="timing.max_reps", allowed="100000")
_drill("min_reps zero", BASE + "timing: {min_reps: 0}\n", key="timing.min_reps")
_drill(
    "min_reps above max_reps", BASE + "timing: {min_reps: 50, max_reps: 10}\n", key="timing.min_reps", allowed="1 to 10"
)
_drill(
    "min_reps above max_reps per device",
    BASE + "devices: {cpu: {timing: {max_reps: 3}}}\ntiming: {min_reps: 5}\n",
    key="timing.min_reps",
    allowed="from 1 to 3",
)
_drill("warmup_ms infinite", BASE + "timing: {warmup_ms: .inf}\n", key="timing.warmup_ms", allowed="0 to 3600000")
_drill("warmup_ms negative", BASE + "timing: {warmup_ms: -1}\n", key="timing.warmup_ms")
_drill("rep_ms not a number", BASE + "timing: {rep_ms: .nan}\n", key="timing.rep_ms", allowed="a number from 0")
_drill("rep_ms a year", BASE + "timing: {rep_ms: 31536000000}\n", key="timing.rep_ms", allowed="3600000")
_drill("case_timeout_s zero", BASE + "limits: {case_timeout_s: 0}\n", key="limits.case_timeout_s", allowed="> 0")
_drill("case_timeout_s negative", BASE + "limits: {case_timeout_s: -5}\n", key="limits.case_timeout_s")
_drill("case_timeout_s infinite", BASE + "limits: {case_timeout_s: .inf}\n", key="limits.case_timeout_s")
_drill("reference_max_elements 0", BASE + "limits: {reference_max_elements: 0}\n", key="limits.reference_max_elements")
_drill("name with a space", _edit("name: drill", "name: my drill"), key="name", allowed="letters, digits, _ and -")
_drill("name a path", _edit("name: drill", "name: ../../etc"), key="name")
_drill("name too long", _edit("name: drill", "name: " + "n" * 5000), key="name", allowed="at most 100 characters")
_drill("no mechanisms", _edit("  - name: mha\n  - name: gqa\n    params: {G: 2}\n", "  []\n"), key="mechanisms")
_drill("missing name", _edit("name: drill\n", ""), key="name", allowed="letters")
_drill("missing sweep", _edit("sweep: {T: 32, H: 4, d: 8}\n", ""), key="sweep", allowed="the shape axes")
_drill("missing T", _edit("T: 32, ", ""), key="sweep.T", allowed="tokens per sequence")
_drill("unknown dtype", BASE + "dtypes: [fp32, fp8]\n", key="dtypes[1]", allowed="'fp64', 'fp32'")
_drill("unknown mode", BASE + "modes: backward\n", key="modes", allowed="'fwd', 'bwd'")
_drill("unknown level", BASE + "levels: [block]\n", key="levels[0]", allowed="'core'")
_drill("D not divisible by H", _edit("d: 8", "D: 30"), key="sweep.D")
_drill("both d and D", _edit("d: 8", "d: 8, D: 32"), key="sweep")
_drill("neither d nor D", _edit(", d: 8", ""), key="sweep", allowed="d (head dim) or D")
_drill("both B and tokens", _edit("d: 8", "d: 8, B: 1, tokens: 64"), key="sweep")
_drill("unknown mechanism", _edit("name: mha", "name: mla"), key="mechanisms[0].name", allowed="mha", stage="registry")
_drill("unknown impl", BASE + "impls: [flashier]\n", key="impls[0]", allowed="reference", stage="registry")
_drill("G zero", _edit("{G: 2}", "{G: 0}"), key="mechanisms[1].params.G", allowed="an integer from 1", stage="registry")
_drill(
    "G 2**70", _edit("{G: 2}", f"{{G: {2**70}}}"), key="mechanisms[1].params.G", allowed="2147483647", stage="registry"
)
_drill("G not dividing H", _edit("{G: 2}", "{G: 3}"), key="mechanisms[1].params.G", stage="registry")
