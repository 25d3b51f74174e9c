"""Exchange Server builds: parse AdminDisplayVersion or ExSetup file versions and name the product, CU and update.

Build numbers come from Microsoft's "Exchange Server build numbers and release dates"
(https://learn.microsoft.com/exchange/new-features/build-numbers-and-release-dates) as tabulated in CSS-Exchange
Shared/Get-ExchangeBuildVersionInformation.ps1 (the Exchange support team's single source of build facts).
Exchange 2019 RTM (15.2.221.12) is not in that table; everything below CU1 is RTM there too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

Build = tuple[int, int, int, int]

# product -> ordered (CU name, CU build, {update name: build})
_CUS: dict[str, list[tuple[str, str, dict[str, str]]]] = {
    "Exchange 2013": [
        ("CU19", "15.0.1365.1", {"Mar18SU": "15.0.1365.3", "May18SU": "15.0.1365.7"}),
        ("CU20", "15.0.1367.3", {"May18SU": "15.0.1367.6", "Aug18SU": "15.0.1367.9"}),
        ("CU21", "15.0.1395.4", {"Aug18SU": "15.0.1395.7", "Oct18SU": "15.0.1395.8", "Jan19SU": "15.0.1395.10",
                                 "Mar21SU": "15.0.1395.12"}),
        ("CU22", "15.0.1473.3", {"Apr19SU": "15.0.1473.4", "Jun19SU": "15.0.1473.5", "Mar21SU": "15.0.1473.6"}),
        ("CU23", "15.0.1497.2", {"Mar21SU": "15.0.1497.12", "Aug22SU": "15.0.1497.40", "Mar23SU": "15.0.1497.48"}),
    ],
    "Exchange 2016": [
        ("CU1", "15.1.396.30", {}), ("CU2", "15.1.466.34", {}), ("CU3", "15.1.544.27", {}),
        ("CU4", "15.1.669.32", {}), ("CU5", "15.1.845.34", {}), ("CU6", "15.1.1034.26", {}),
        ("CU7", "15.1.1261.35", {"Mar18SU": "15.1.1261.39"}),
        ("CU8", "15.1.1415.2", {"Mar18SU": "15.1.1415.4", "May18SU": "15.1.1415.7", "Mar21SU": "15.1.1415.8"}),
        ("CU9", "15.1.1466.3", {}), ("CU10", "15.1.1531.3", {}), ("CU11", "15.1.1591.10", {}),
        ("CU12", "15.1.1713.5", {}), ("CU13", "15.1.1779.2", {}), ("CU14", "15.1.1847.3", {}),
        ("CU15", "15.1.1913.5", {}), ("CU16", "15.1.1979.3", {}), ("CU17", "15.1.2044.4", {}),
        ("CU18", "15.1.2106.2", {"Mar21SU": "15.1.2106.13"}),
        ("CU19", "15.1.2176.2", {"May21SU": "15.1.2176.14"}),
        ("CU20", "15.1.2242.4", {"Jul21SU": "15.1.2242.12"}),
        ("CU21", "15.1.2308.8", {"Mar22SU": "15.1.2308.27"}),
        ("CU22", "15.1.2375.7", {"Aug22SU": "15.1.2375.31", "Nov22SU": "15.1.2375.37"}),
        ("CU23", "15.1.2507.6", {"Aug22SU": "15.1.2507.12", "Nov23SU": "15.1.2507.35", "Mar24SU": "15.1.2507.37",
                                 "Apr24HU": "15.1.2507.39", "Nov24SUv2": "15.1.2507.44", "Apr25HU": "15.1.2507.55",
                                 "May25HU": "15.1.2507.57", "Aug25SU": "15.1.2507.58", "Sep25HU": "15.1.2507.59",
                                 "Oct25SU": "15.1.2507.61", "Dec25SU": "15.1.2507.63", "Feb26SU": "15.1.2507.66",
                                 "Jun26SU": "15.1.2507.69", "Jul26SU": "15.1.2507.71", "Aug26SU": "15.1.2507.72",
                                 "Sep26SU": "15.1.2507.73", "Sep26SUv2": "15.1.2507.75"}),
    ],
    "Exchange 2019": [
        ("RTM", "15.2.221.12", {}),
        ("CU1", "15.2.330.5", {"Mar21SU": "15.2.330.11"}), ("CU2", "15.2.397.3", {}), ("CU3", "15.2.464.5", {}),
        ("CU4", "15.2.529.5", {}), ("CU5", "15.2.595.3", {}), ("CU6", "15.2.659.4", {}),
        ("CU7", "15.2.721.2", {"Mar21SU": "15.2.721.13"}), ("CU8", "15.2.792.3", {}), ("CU9", "15.2.858.5", {}),
        ("CU10", "15.2.922.7", {"Mar22SU": "15.2.922.27"}),
        ("CU11", "15.2.986.5", {"Aug22SU": "15.2.986.29", "Mar23SU": "15.2.986.42"}),
        ("CU12", "15.2.1118.7", {"Aug22SU": "15.2.1118.12", "Feb23SU": "15.2.1118.25", "Nov23SU": "15.2.1118.40"}),
        ("CU13", "15.2.1258.12", {"Mar24SU": "15.2.1258.32", "Apr24HU": "15.2.1258.34", "Nov24SUv2": "15.2.1258.39"}),
        ("CU14", "15.2.1544.4", {"Mar24SU": "15.2.1544.9", "Apr24HU": "15.2.1544.11", "Nov24SUv2": "15.2.1544.14",
                                 "Apr25HU": "15.2.1544.25", "May25HU": "15.2.1544.27", "Aug25SU": "15.2.1544.33",
                                 "Sep25HU": "15.2.1544.34", "Oct25SU": "15.2.1544.36", "Dec25SU": "15.2.1544.37",
                                 "Feb26SU": "15.2.1544.39", "Jun26SU": "15.2.1544.41", "Jul26SU": "15.2.1544.43",
                                 "Aug26SU": "15.2.1544.44", "Sep26SU": "15.2.1544.46", "Sep26SUv2": "15.2.1544.48"}),
        ("CU15", "15.2.1748.10", {"Apr25HU": "15.2.1748.24", "May25HU": "15.2.1748.26", "Aug25SU": "15.2.1748.36",
                                  "Sep25HU": "15.2.1748.37", "Oct25SU": "15.2.1748.39", "Dec25SU": "15.2.1748.42",
                                  "Feb26SU": "15.2.1748.43", "Jun26SU": "15.2.1748.46", "Jul26SU": "15.2.1748.48",
                                  "Aug26SU": "15.2.1748.49", "Sep26SU": "15.2.1748.51", "Sep26SUv2": "15.2.1748.53"}),
    ],
    "Exchange SE": [
        ("RTM", "15.2.2562.17", {"Aug25SU": "15.2.2562.20", "Sep25HU": "15.2.2562.27", "Oct25SU": "15.2.2562.29",
                                 "Dec25SU": "15.2.2562.35", "Feb26SU": "15.2.2562.37", "May26HU": "15.2.2562.41",
                                 "Jun26SU": "15.2.2562.43", "Jul26SU": "15.2.2562.45", "Aug26SU": "15.2.2562.46",
                                 "Sep26SU": "15.2.2562.49", "Sep26SUv2": "15.2.2562.53"}),
    ],
}

# End of extended support (https://learn.microsoft.com/lifecycle/products/?terms=exchange%20server).
END_OF_SUPPORT: dict[str, date] = {
    "Exchange 2007": date(2017, 4, 11),
    "Exchange 2010": date(2020, 10, 13),
    "Exchange 2013": date(2023, 4, 11),
    "Exchange 2016": date(2025, 10, 14),
    "Exchange 2019": date(2025, 10, 14),
}

# The HMA minimum per version (https://learn.microsoft.com/microsoft-365/enterprise/hybrid-modern-auth-overview).
HMA_MINIMUM: dict[str, str] = {
    "Exchange 2013": "15.0.1365.1",   # CU19
    "Exchange 2016": "15.1.1415.2",   # CU8
    "Exchange 2019": "15.2.330.5",    # CU1 (not RTM 15.2.221.12)
    "Exchange SE": "15.2.2562.17",    # every SE build
}

# Hybrid deployments need the latest CU or the one before it (hybrid-modern-auth-overview, "Exchange Server").
SUPPORTED_CU_FLOOR: dict[str, str] = {
    "Exchange 2013": "15.0.1473.3",   # CU22 (CU23 is the last)
    "Exchange 2016": "15.1.2375.7",   # CU22 (CU23 is the last)
    "Exchange 2019": "15.2.1544.4",   # CU14 (CU15 is the last)
    "Exchange SE": "15.2.2562.17",
}

_ADMIN_DISPLAY_VERSION = re.compile(r"Version\s+(\d+)\.(\d+)\s+\(Build\s+(\d+)\.(\d+)\)", re.IGNORECASE)
_DOTTED = re.compile(r"^\s*(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?\s*$")


def parse_build(text: object) -> Build:
    """'Version 15.2 (Build 986.5)', '15.02.0986.005' (ExSetup) or '15.2.986.5' -> (15, 2, 986, 5)."""
    if isinstance(text, (tuple, list)) and len(text) in (3, 4):
        parts = [int(p) for p in text] + [0] * (4 - len(text))
        return parts[0], parts[1], parts[2], parts[3]
    if not isinstance(text, str):
        raise ValueError(f"not a build number: {text!r}")
    return _parse_text(text)


@lru_cache(maxsize=1024)
def _parse_text(text: str) -> Build:
    """Cached: a server's version is parsed by a dozen checks and renderers (a few distinct builds per org)."""
    match = _ADMIN_DISPLAY_VERSION.search(text) or _DOTTED.match(text)
    if not match:
        raise ValueError(f"not a build number: {text!r}")
    major, minor, build, revision = (int(g) if g is not None else 0 for g in match.groups())
    return major, minor, build, revision


def format_build(build: Build) -> str:
    return ".".join(str(part) for part in build)


@dataclass(frozen=True)
class BuildInfo:
    build: Build
    product: str          # 'Exchange 2019', 'Exchange SE', 'Exchange 2010', 'unknown'
    cu: str | None        # 'CU14', 'RTM', None when unknown or older than the table
    update: str | None    # 'Apr24HU' when the build is exactly a known update, else None

    @property
    def name(self) -> str:
        return " ".join(part for part in (self.product, self.cu, self.update) if part)

    @property
    def end_of_support(self) -> date | None:
        return END_OF_SUPPORT.get(self.product)


def product_of(build: Build) -> str:
    major, minor, number = build[0], build[1], build[2]
    if major == 15:
        if minor == 2:
            return "Exchange SE" if number >= 2562 else "Exchange 2019"
        return {0: "Exchange 2013", 1: "Exchange 2016"}.get(minor, "unknown")
    return {14: "Exchange 2010", 8: "Exchange 2007"}.get(major, "unknown")


@lru_cache(maxsize=4096)
def describe(text: str) -> BuildInfo:
    build = parse_build(text)
    product = product_of(build)
    cu = update = None
    for cu_name, cu_build, updates in _CUS.get(product, []):
        if parse_build(cu_build)[:3] <= build[:3]:
            cu = cu_name
            for update_name, update_build in updates.items():
                if parse_build(update_build) == build:
                    update = update_name
    return BuildInfo(build=build, product=product, cu=cu, update=update)


def version_key(text: object) -> Build:
    """A sortable key for dotted versions of any length (also used for plain '1.2' strings)."""
    if isinstance(text, str) and not _ADMIN_DISPLAY_VERSION.search(text):
        parts = text.strip().split(".")
        if 1 <= len(parts) <= 4 and all(p.isdigit() for p in parts):
            numbers = [int(p) for p in parts] + [0] * (4 - len(parts))
            return numbers[0], numbers[1], numbers[2], numbers[3]
    return parse_build(text)
