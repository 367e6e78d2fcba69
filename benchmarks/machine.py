"""What a benchmark ran on, printed next to its figures (docs/benchmarks.md records it)."""

from __future__ import annotations

import importlib
import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info(*packages: str) -> dict[str, object]:
    """CPU, usable cores, 1-minute load average, Python and the versions of ``packages``
    (``"not installed"`` for a missing one); the GPU's name when torch sees one."""
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} ({usable_cores()} usable)",
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    for name in packages:
        try:
            info[name] = importlib.import_module(name).__version__
        except ImportError:
            info[name] = "not installed"
    if "torch" in packages and info["torch"] != "not installed":
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_line(*packages: str) -> str:
    """``machine_info`` as one printable line."""
    return "; ".join(f"{key}: {value}" for key, value in machine_info(*packages).items())
