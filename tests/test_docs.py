"""The docs hold: their links lead somewhere, and the commands they tell users to run still run.

Links: every relative link in the README and docs/ names a file that exists and, with `#anchor`, a heading of that
file (GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, `-1`, `-2` for repeated headings).

Commands: every `python main.py ...` and `python benchmarks/<x>.py ...`
in the README, docs/, the configs' and benchmarks' docstrings and main.py names flags that exist, and its config
overrides name existing keys with values of their type; a main.py command's whole config passes the checks main.py
makes before it starts (the model fits the data, and so on).

The check runs in a subprocess: the benchmarks' argument parsers are built by running their scripts (up to
`parse_args`), and a script may set environment variables (XLA_FLAGS) that must not reach this process's children.
"""

from __future__ import annotations

import collections
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
_COMMAND = re.compile(r"(?:^|`|\n)[ \t]*(?:\$ )?(python3? (?:main\.py|benchmarks/\w+\.py)(?: [^`\n]*)?)")
_ASSIGNMENT = re.compile(r"^(\w+)=\"([^\"]*)\"", re.M)  # PEER="--set ... " in a bash block, used as $PEER


def is_placeholder(value: str) -> bool:
    """`N`, `DIR`, `<workdir>`, `...`: stands for what the reader fills in."""
    return bool(re.fullmatch(r"[A-Z_]+", value)) or "<" in value or "..." in value


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, argv after `python`) for every documented command; shell variables set in the same file expanded."""
    files = [
        ROOT / "README.md",
        ROOT / "main.py",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "configs").glob("*.py")),
        *sorted((ROOT / "benchmarks").glob("*.py")),
    ]
    found = []
    for path in files:
        text = path.read_text()
        variables = {name: " ".join(value.split()) for name, value in _ASSIGNMENT.findall(text)}
        text = re.sub(r"\\\n\s*", " ", text)  # continued lines
        for match in _COMMAND.finditer(text):
            command = re.split(r" # | && |; |\| ", match.group(1))[0]
            for name, value in variables.items():
                command = command.replace(f"${name}", value)
            argv = [t for t in shlex.split(command)[1:] if not t.startswith((">", "2>"))]
            if len(argv) > 1:  # a bare script name is prose naming the script, not a command
                found.append((str(path.relative_to(ROOT)), argv))
    return found


class _Parsed(Exception):
    pass


def benchmark_options(script: str, args: list[str]) -> dict:
    """The benchmark's own parser's reading of `args` (its script run up to `parse_args`)."""
    import argparse
    import contextlib
    import io
    import runpy

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, argv=None, namespace=None):
        raise _Parsed(vars(original(self, argv, namespace)))

    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [script, *args]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit:
        raise ValueError(errors.getvalue().strip().splitlines()[-1]) from None
    finally:
        argparse.ArgumentParser.parse_args = original
    raise ValueError(f"{script} never parsed its arguments")


def check(argv: list[str]) -> None:
    """Raises with what is wrong with `python <argv>`."""
    from absl import flags

    from vdm_jax import configuration

    script, args = argv[0], argv[1:]
    if script == "main.py":
        import main  # noqa: F401  (defines main.py's flags)

        config, overrides, placeholders = "configs/default.py", [], []
        for arg in args:
            if arg.startswith("--config="):
                config = arg.split("=", 1)[1]
            elif arg.startswith("--config."):
                key_value = arg[len("--config.") :]
                (placeholders if is_placeholder(key_value.split("=", 1)[-1]) else overrides).append(key_value)
            elif arg.startswith("--"):
                name = arg[2:].split("=", 1)[0]
                if name not in flags.FLAGS and not (name.startswith("no") and name[2:] in flags.FLAGS):
                    raise ValueError(f"main.py has no flag --{name}")
        if is_placeholder(config):
            return
        cfg = configuration.load_config_file(str(ROOT / config), overrides)
        for key_value in placeholders:
            key = key_value.split("=", 1)[0]
            if key.startswith("<"):
                continue
            node = cfg
            for part in key.split("."):
                if part not in node:
                    raise ValueError(f"{config} has no key {key}")
                node = node[part]
        configuration.from_config_dict(cfg)  # main.py's checks before it starts
    else:
        options = benchmark_options(script, args)
        overrides = [kv for kv in options.get("set") or [] if not is_placeholder(kv.split("=", 1)[-1])]
        # A benchmark given --workdir applies --set to that run's config, unknown here: keys and types are checked
        # against the benchmark's config (the default one if it takes none), the cross-checks only without one.
        config = options.get("config") or "configs/default.py"
        cfg = configuration.load_config_file(str(ROOT / config), overrides)
        if not options.get("workdir"):
            configuration.from_config_dict(cfg)


def main() -> None:
    commands = documented_commands()
    failures = []
    for where, argv in commands:
        try:
            check(argv)
        except Exception as e:  # noqa: BLE001  (every failure is reported, with its command)
            failures.append(f"{where}: python {shlex.join(argv)}\n    {type(e).__name__}: {e}")
    print(f"checked {len(commands)} commands")
    print("\n".join(failures))


def test_documented_commands_parse_and_their_configs_pass_checks():
    out = subprocess.run(
        [sys.executable, __file__], cwd=ROOT, capture_output=True, text=True, timeout=300, env=_quiet_env()
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines and lines[0].startswith("checked "), out.stdout[-3000:]
    assert int(lines[0].split()[1]) >= 50, "the docs' commands were not found"
    assert len(lines) == 1, "documented commands that would fail:\n" + "\n".join(lines[1:])


def github_anchor(heading: str) -> str:
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def heading_anchors(text: str) -> set[str]:
    anchors, seen, in_code = set(), collections.Counter(), False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"#{1,6} (.*)", line)
        if heading:
            anchor = github_anchor(heading.group(1))
            anchors.add(anchor if seen[anchor] == 0 else f"{anchor}-{seen[anchor]}")
            seen[anchor] += 1
    return anchors


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("Trained longer: 12000 steps; 6000 + 4000 (16 clips)") == (
        "trained-longer-12000-steps-6000--4000-16-clips"
    )
    assert github_anchor("`video_folder`: your own videos") == "video_folder-your-own-videos"
    assert heading_anchors("# A\n## A\n```\n# A\n```\n### A") == {"a", "a-1", "a-2"}


def test_docs_links_lead_to_files_and_headings():
    broken, count = [], 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"\w+://|mailto:", link):
                continue
            count += 1
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target.read_text()):
                broken.append(f"{page.name}: {link} (no such heading)")
    assert count >= 30, "the docs' links were not found"
    assert not broken, "broken links:\n" + "\n".join(broken)


def _quiet_env() -> dict:
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
