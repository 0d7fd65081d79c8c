"""A newcomer's first hour, run literally: the README's Quick start and "On MELD" commands, timed.

Copies this checkout as a clean clone would see it (tracked files plus new files git does not
ignore) into a fresh folder, reads the ```bash blocks under the README's "## Quick start" and
"## On MELD" headings, and runs every command in them with bash, as printed, from the clone's
root; the README's figures for install time, demo time, demo score and the test suite come from
what this script prints.

Where a newcomer's situation differs from the README's, the script does what that newcomer would:
- "On MELD" reads `MELD.Raw`: here it is a synthetic MELD-layout dataset made first with
  `emo synth MELD.Raw --clips N` (the real MELD videos are not on this machine).
- The seed design's extraction needs bert-base-uncased and CLIP weights from the hub; with no
  network it must refuse in one sentence that points at `--preset offline` (checked), after which
  the MELD commands continue on the offline cache (`cache/meld` -> `cache/meld-offline`).
- `python -m pytest -q` is run only with `--tests` (it is the whole suite; the journey test skips it).

`--reuse-venv PATH` (for the test and CI, where the same packages were just installed) lets the
fresh venv see PATH's site-packages through a .pth file before the literal install line runs, so
pip only installs emo itself; without it the install is a real one (the README's install figure).

    .venv/bin/python bench/newcomer.py --tests                  # the README's figures (15-25 minutes)
    .venv/bin/python bench/newcomer.py --reuse-venv .venv       # the journey, without a fresh install

Exit 0 when every step did what the README says, 1 with the failing command named otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_HINT = "--preset offline"


def readme_blocks(readme: str, heading: str) -> list[str]:
    """The commands of the ```bash blocks in one `## heading` section, comments and blanks dropped."""
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(line)
    return commands


def clean_copy(dest: Path) -> None:
    """The checkout as a clean clone sees it: tracked and unignored files, nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        source = ROOT / raw.decode()
        if source.is_file():
            target = dest / raw.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def prepare_venv(clone: Path, reuse: Path) -> None:
    """A new venv in the clone that also sees `reuse`'s packages, so the literal install is quick."""
    subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True)
    site = next((clone / ".venv" / "lib").glob("python*/site-packages"))
    reused = next((reuse.resolve() / "lib").glob("python*/site-packages"))
    (site / "_emo_newcomer_reuse.pth").write_text(f"{reused}\n", encoding="utf-8")


class Journey:
    """Runs commands in the clone with bash, one shell per README line, and keeps the timings."""

    def __init__(self, clone: Path, log: Path):
        self.clone, self.log, self.steps = clone, log, []
        self.env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        self.env["PATH"] = os.pathsep.join(p for p in self.env["PATH"].split(os.pathsep) if "/.venv/" not in p + "/")

    def run(self, command: str, *, shown: str | None = None, expect: int = 0, timeout: float = 3600) -> str:
        # every line after the quick start's runs with the venv active, as in the user's shell
        activate = ". .venv/bin/activate 2>/dev/null; " if (self.clone / ".venv/bin/activate").is_file() else ""
        started = time.perf_counter()
        done = subprocess.run(
            ["bash", "-c", activate + command],
            cwd=self.clone,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds, self.ended = time.perf_counter() - started, time.time()
        output = done.stdout + done.stderr
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(f"$ {shown or command}\n{output}\n[exit {done.returncode}, {seconds:.1f} s]\n\n")
        self.steps.append({"command": shown or command, "exit": done.returncode, "seconds": round(seconds, 1)})
        print(f"[{seconds:6.1f} s] exit {done.returncode}  {shown or command}", flush=True)
        if done.returncode != expect:
            raise SystemExit(
                f"bench/newcomer.py: `{shown or command}` exited {done.returncode}, not {expect}; "
                f"its output is in {self.log}:\n{output[-3000:]}"
            )
        return output


def quick_start(journey: Journey, commands: list[str], tests: bool) -> dict:
    figures = {}
    for command in commands:
        if "pytest" in command.split() and not tests:
            print(f"(not run here: {command})")
            continue
        if "pip install" in command:
            # one line installs and runs the demo: time each part from the shell's own trace
            stamped = f"PS4='+[$(date +%s.%N)] '; set -x; {command}"
            output = journey.run(stamped, shown=command)
            stamps = [(float(t), rest) for t, rest in re.findall(r"^\++\[(\d+\.\d+)\] (.*)$", output, flags=re.M)]
            pip = next(t for t, rest in stamps if rest.startswith("pip install"))
            demo = next(t for t, rest in stamps if rest.startswith("emo demo"))
            figures["install_seconds"] = round(demo - pip, 1)
            figures["demo_seconds"] = round(journey.ended - demo, 1)
            saved = json.loads((journey.clone / "emo-demo" / "demo.json").read_text(encoding="utf-8"))
            figures["demo_test_weighted_f1"] = round(100 * saved["test_weighted_f1"], 1)
            figures["demo_baseline_weighted_f1"] = round(100 * saved["baseline"]["weighted_f1"], 1)
        else:
            output = journey.run(command)
            found = re.search(r"(\d+) passed.* in ([\d.]+)s", output)
            if found:
                figures["tests_passed"], figures["tests_seconds"] = int(found[1]), float(found[2])
    return figures


def on_meld(journey: Journey, commands: list[str], clips: int) -> None:
    journey.run(
        f"emo synth MELD.Raw --clips {clips}", shown=f"emo synth MELD.Raw --clips {clips}  (stands in for MELD)"
    )
    offline = False
    for command in commands:
        if offline:
            command = command.replace("cache/meld ", "cache/meld-offline ")
        if command.startswith("emo extract") and OFFLINE_HINT not in command and not offline:
            output = journey.run(command, expect=1)  # no hub here: one sentence pointing at the offline preset
            if OFFLINE_HINT not in output or "Traceback" in output:
                raise SystemExit(f"bench/newcomer.py: `{command}` did not point at {OFFLINE_HINT}:\n{output}")
            continue
        journey.run(command)
        offline = offline or OFFLINE_HINT in command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="folder for the clone (default: a new temporary one)")
    parser.add_argument("--reuse-venv", type=Path, default=None, help="let the fresh venv see this venv's packages")
    parser.add_argument("--tests", action="store_true", help="also run the README's test command (the whole suite)")
    parser.add_argument("--clips", type=int, default=24, help="train clips of the synthetic MELD.Raw")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="emo-newcomer-"))
    clone = work / "emo"
    if clone.exists():
        raise SystemExit(f"bench/newcomer.py: {clone} exists; pass a new --work folder.")
    clean_copy(clone)
    if args.reuse_venv:
        prepare_venv(clone, args.reuse_venv)
    readme = (clone / "README.md").read_text(encoding="utf-8")
    journey = Journey(clone, work / "journey.log")
    started = time.perf_counter()
    figures = quick_start(journey, readme_blocks(readme, "Quick start"), args.tests)
    on_meld(journey, readme_blocks(readme, "On MELD"), args.clips)
    figures["journey_seconds"] = round(time.perf_counter() - started, 1)
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    figures["fresh_install"] = args.reuse_venv is None
    (work / "figures.json").write_text(json.dumps({"figures": figures, "steps": journey.steps}, indent=1))
    print(json.dumps(figures, indent=1))
    print(f"Every README command ran as printed; log: {journey.log}")


if __name__ == "__main__":
    main()
