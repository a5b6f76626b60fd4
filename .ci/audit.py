"""Known vulnerabilities in the project's environment: pip-audit against PyPI's advisories.

Exit 1 if an installed package has a known vulnerability (each is listed with the versions
that fix it). Packages pip-audit could not check (the service unreachable, a package or
version it does not know) are counted and named: the audit then says NOT AUDITED, never
"no known vulnerabilities", and exits 2 with AUDIT_REQUIRED=1 (set it where the service must
be reachable), else 0. Extra arguments go to pip-audit (e.g. `-s osv`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main(extra: list[str]) -> int:
    """Run pip-audit on this interpreter's environment and judge its report."""
    required = os.environ.get("AUDIT_REQUIRED") == "1"
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--progress-spinner",
        "off",
        "--skip-editable",
        "--desc",
        "off",
        "--format",
        "json",
        *extra,
    ]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        dependencies = json.loads(run.stdout)["dependencies"]
    except (ValueError, KeyError):
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        print(
            f"audit: NOT AUDITED: pip-audit stopped (exit {run.returncode}): {last[:300]}",
            file=sys.stderr,
        )
        return 2 if required else 0
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
            print(f"audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    checked = len(dependencies) - len(skipped)
    print(
        f"audit: {checked} of {len(dependencies)} packages checked, "
        f"{len(vulnerable)} with known vulnerabilities",
        file=sys.stderr,
    )
    if skipped:
        names = ", ".join(d["name"] for d in skipped[:8]) + (", ..." if len(skipped) > 8 else "")
        print(
            f"audit: NOT AUDITED: {len(skipped)} package(s) could not be checked ({names}); "
            f"pip-audit says: {skipped[0]['skip_reason']}",
            file=sys.stderr,
        )
    if vulnerable:
        return 1
    return 2 if skipped and required else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
