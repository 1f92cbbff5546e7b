"""Valgrind's callgrind, driven from Python: find it, start a Python under it, and count instructions
between two points of a running process.

Why callgrind and client requests: the counts must cover the timed requests only, not the imports,
builds and warm-up that make up almost all of a process's instructions (two identical processes
differ by about 1% in their totals: more than a regression worth catching). Callgrind starts with
instrumentation off (`--instr-atstart=no`, so imports and builds run at valgrind's uninstrumented
speed) and takes three client requests from the process itself: start instrumentation, zero the
counters, dump the counters since the last zero or dump to a file with a label. Cachegrind could
not: valgrind 3.19's cachegrind takes no client requests (3.22 added start/stop only).

A client request is a magic no-op instruction sequence (valgrind.h's "special instruction
preamble": four rotations of rdi by 3, 13, 61 and 51 bits, 128 in all, then `xchg rbx, rbx`) that
valgrind's JIT recognizes; outside valgrind it does nothing and returns its default. Python cannot
emit it, so `_client_request` is those 30 bytes of x86-64 machine code in an executable page, called
through ctypes: the same protocol as valgrind.h's VALGRIND_DO_CLIENT_REQUEST_EXPR, which is a
stable ABI (unchanged since valgrind 3.0). Other architectures get a clear "not supported" reason.

Valgrind before 3.22 emulates FMA instructions (every AVX2 kernel of oneDNN, MLAS and OpenBLAS) in
software: measured here, a 256x256 float32 matmul took 947 ms under valgrind 3.19, 37 ms under
3.24 and 0.5 ms natively. `find()` accepts any version and says when one is that slow.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pytest_navigator.workers.fork_servers import Wrapper

#: Environment variable naming the valgrind executable (else `valgrind` on PATH).
ENV_VALGRIND = "NAVIGATOR_VALGRIND"
#: Environment variable a worker under callgrind reads: the folder its dumps go to.
ENV_OUT = "NAVIGATOR_CALLGRIND_OUT"
INSTALL_HINT = "apt-get install valgrind (3.22 or newer for runtimes with FMA kernels), or set NAVIGATOR_VALGRIND=PATH"
#: Versions before this emulate FMA instructions in software (about 1000x slower than natively).
FAST_FMA = (3, 22)
#: Settings every counted process gets: the same hash seed, one OpenMP/BLAS thread, fixed malloc thresholds.
DETERMINISTIC_ENV = {
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    # glibc adjusts its mmap threshold as memory is freed, so the same request could take a different
    # allocation path in each process; fixed thresholds turn that off (measured: a runtime whose 3
    # processes differed by 1.1% agreed within 0.04% with them)
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=134217728",
    # torch.compile's C++ is built by a compiler that runs outside valgrind (children are not traced)
    # with -march=native: on an AVX-512 host it emitted AVX-512, which valgrind does not emulate, and
    # the counting worker died of SIGILL. x86-64-v3 (AVX2, FMA) is what valgrind runs, on any host of
    # ours, and the same code everywhere keeps the counts host-independent.
    "TORCHINDUCTOR_CPP_MARCH": "x86-64-v3",
}

# valgrind.h: VG_USERREQ_TOOL_BASE('C','T') and callgrind's requests; the core's RUNNING_ON_VALGRIND.
_CALLGRIND = (ord("C") << 24) | (ord("T") << 16)
DUMP_STATS_AT = _CALLGRIND + 3
ZERO_STATS = _CALLGRIND + 1
START_INSTRUMENTATION = _CALLGRIND + 4
STOP_INSTRUMENTATION = _CALLGRIND + 5
RUNNING_ON_VALGRIND = 0x1001

_AMD64_REQUEST = bytes.fromhex(
    "4889f8"  # mov rax, rdi      ; rax: the request's 6 words
    "4889f2"  # mov rdx, rsi      ; rdx: the default result
    "48c1c703"  # rol rdi, 3
    "48c1c70d"  # rol rdi, 13
    "48c1c73d"  # rol rdi, 61
    "48c1c733"  # rol rdi, 51     ; 128 bits in all: rdi unchanged
    "4887db"  # xchg rbx, rbx     ; under valgrind: rdx = client_request(rax)
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)


@dataclass(frozen=True)
class Valgrind:
    """A usable valgrind: its executable, version and the folder of its tools (VALGRIND_LIB)."""

    path: str
    version: tuple[int, ...]
    lib: str | None = None

    @property
    def version_text(self) -> str:
        return "valgrind-" + ".".join(map(str, self.version))

    @property
    def slow_fma(self) -> bool:
        return self.version[:2] < FAST_FMA

    def command(self, out_dir: Path, log: Path) -> list[str]:
        """The valgrind command line a counted Python runs under."""
        return [
            self.path,
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.%p",
            f"--log-file={log}",
            "-q",
        ]

    def wrapper(self) -> Wrapper:
        """How a counted Python starts under callgrind, as values for the fork servers and workers
        (fork_servers.Wrapper): its dumps go to the process's folder/callgrind."""
        env = {**DETERMINISTIC_ENV, ENV_OUT: Wrapper.OUT}
        if self.lib:
            env["VALGRIND_LIB"] = self.lib
        command = self.command(Path(Wrapper.OUT), Path(Wrapper.LOG))
        return Wrapper("callgrind", tuple(command), tuple(env.items()))


def start_counting_server() -> None:
    """Start the counting fork server now, where valgrind is found (fork_servers.start_counting_server);
    where it is not, the counts skip later with the reason."""
    from pytest_navigator.runtimes.remote import start_counting_server as start  # its workers build runtimes

    found = find()
    if not isinstance(found, str):
        start(found.wrapper())


def find() -> Valgrind | str:
    """The valgrind to count with, or why there is none (with the install command)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"instruction counts need an x86-64 machine (valgrind client requests are issued as x86-64 code); this is {platform.machine()}"
    given = os.environ.get(ENV_VALGRIND)
    path = given or shutil.which("valgrind")
    if not path:
        return f"valgrind is not installed (not on PATH): {INSTALL_HINT}"
    if given and not os.access(given, os.X_OK):
        return f"{ENV_VALGRIND}={given} is not an executable file; give the path of valgrind, or unset it"
    lib = _lib_for(Path(path))
    env = {**os.environ, **({"VALGRIND_LIB": lib} if lib else {})}
    try:
        text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, env=env).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{path} --version failed ({exc}): {INSTALL_HINT}"
    found = re.search(r"valgrind-(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not found:
        return f"{path} --version printed {text.strip()[:80]!r}, not a valgrind version: {INSTALL_HINT}"
    version = tuple(int(x) for x in found.groups() if x is not None)
    return Valgrind(str(path), version, lib)


def _lib_for(executable: Path) -> str | None:
    """VALGRIND_LIB for a valgrind unpacked outside /usr (PREFIX/bin/valgrind with PREFIX/libexec/valgrind)."""
    if "VALGRIND_LIB" in os.environ:
        return os.environ["VALGRIND_LIB"]
    resolved = executable.resolve()
    tools = resolved.parent.parent / "libexec" / "valgrind"
    if resolved.parent.parent != Path("/usr") and (tools / "callgrind-amd64-linux").exists():
        return str(tools)
    return None


class Callgrind:
    """The running process's callgrind, through client requests. Only usable under callgrind."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(_AMD64_REQUEST)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        prototype = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong), ctypes.c_ulong)
        self._request = prototype(address)
        self._out = Path(os.environ.get(ENV_OUT, "."))
        self._instrumenting = False

    def _client_request(self, code: int, arg: int = 0, default: int = 0) -> int:
        words = (ctypes.c_ulong * 6)(code, arg, 0, 0, 0, 0)
        return int(self._request(words, default))

    @property
    def active(self) -> bool:
        """Whether this process runs under valgrind (RUNNING_ON_VALGRIND)."""
        return self._client_request(RUNNING_ON_VALGRIND) > 0

    def start(self) -> None:
        if not self._instrumenting:
            self._client_request(START_INSTRUMENTATION)
            self._instrumenting = True

    def stop(self) -> None:
        if self._instrumenting:
            self._client_request(STOP_INSTRUMENTATION)
            self._instrumenting = False

    def zero(self) -> None:
        self._client_request(ZERO_STATS)

    def dump(self, label: str) -> int:
        """Dump (and zero) the counters; the instructions executed since the last zero or dump."""
        text = ctypes.create_string_buffer(label.encode())
        self._client_request(DUMP_STATS_AT, ctypes.addressof(text))
        return read_dump(self._out, os.getpid(), label)


def read_dump(folder: Path, pid: int, label: str) -> int:
    """The instruction total of the newest dump `pid` wrote with `label` (the file is removed)."""
    dumps = sorted(folder.glob(f"callgrind.{pid}.*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else -1)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump into {folder} for process {pid} (is it running under callgrind?)")
    path = dumps[-1]
    text = path.read_text(errors="replace")
    if f"Client Request: {label}" not in text:
        raise RuntimeError(f"{path} is not the dump labelled {label!r}")
    found = re.search(r"^totals:\s+(\d+)", text, re.MULTILINE) or re.search(r"^summary:\s+(\d+)", text, re.MULTILINE)
    path.unlink()
    return int(found.group(1)) if found else 0
