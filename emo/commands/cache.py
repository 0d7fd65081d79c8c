"""Inspect, check and change a feature cache: `emo cache info|verify|status|rm|upgrade PATH`.

`info` shows what a cache holds (rows and shards per split; every feature set with its
modality, kind, dim, encoder, rows present and size; failed clips by reason) without
reading any features. `rm PATH --set NAME` removes one set; `upgrade PATH` converts a
cache written by emo before feature sets (version 1) without re-extracting anything. `verify` recomputes every shard's SHA-256 and names the shards that changed since
they were written (exit 1), which catches silent disk or copy corruption that HDF5 and Zarr
would happily read as wrong numbers. `status` says which shards of which split are
finished, being written or missing, also while `emo extract` tasks are still writing.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from emo.commands.output import count, index_ranges, make_console
from emo.errors import CacheError

app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# What the per-shard stats in the sidecars measure, in words (seconds, summed over shards).
STAGE_NAMES = {
    "extract_s": "extracting",
    "shard_s": "extracting",  # the key caches made before emo 0.x's rename used
    "write_s": "writing",
    "checksum_s": "checksumming",
    "decode_s": "decoding",
}


def _stage_times(stats: dict[str, float]) -> str:
    """'12.3 s extracting, 0.4 s writing, ...' from {'extract_s': 12.3, 'write_s': 0.4, ...}."""
    parts = []
    for key, value in stats.items():
        name = STAGE_NAMES.get(key) or key.removesuffix("_s").replace("_", " ")
        parts.append(f"{value:.1f} s {name}")
    return ", ".join(parts)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@app.command("info")
def info(
    path: Path = typer.Argument(..., help="The cache folder (the --cache of `emo extract`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full manifest as JSON instead of tables."),
) -> None:
    """Show the splits, every feature set (modality, kind, dim, encoder, rows, size) and failures."""
    from rich.table import Table

    from emo.cache import open_cache
    from emo.cache.layout import finish_hint
    from emo.cache.manifest import build_manifest

    if as_json:
        typer.echo(json.dumps(build_manifest(path), indent=1))
        return
    cache = open_cache(path)
    console = make_console(highlight=False)
    console.print(
        f"[bold]{cache.root}[/bold]  format {cache.format}, cache version {cache.schema_version}, "
        f"emo {cache.emo_version}, created {cache.created}, {_size(cache.bytes)} on disk"
    )

    # Headings are lines of their own: rich pads a table title to the table's width.
    console.print("Feature sets")
    sets = Table()
    for column in ("set", "modality", "kind", "dim", "encoder", "rows present", "size", "fingerprint"):
        sets.add_column(column, justify="right" if column in ("dim", "size") else "left", overflow="fold")
    defaults = set(cache.default_sets().values())
    for item in cache.sets.values():
        present = ", ".join(
            f"{split} {part.present}/{part.rows}" + ("" if part.complete else " (incomplete)")
            for split, part in item.splits.items()
        )
        label = item.name + (" (default)" if item.name in defaults else "")
        sets.add_row(
            label,
            item.modality,
            item.kind,
            item.shape,
            item.encoder,
            present or "none",
            _size(item.bytes),
            item.digest,
        )
    for name in cache.damaged_sets:  # shown, never hidden: its set.json cannot be trusted
        sets.add_row(f"{name} (damaged)", name.partition("/")[0], "?", "?", "?", "unknown", "?", "?")
    console.print(sets)

    console.print("Splits")
    splits = Table()
    for column in ("split", "rows", "shards", "complete", "modalities", "failures", "ignored", "row table"):
        splits.add_column(column, justify="right" if column in ("rows", "shards", "failures", "size") else "left")
    for split in cache.splits.values():
        expected = f" of {split.expected_rows}" if split.expected_rows is not None and not split.complete else ""
        shard_count = str(len(split.shards))
        if split.expected_shards is not None and len(split.shards) != split.expected_shards:
            shard_count += f"/{split.expected_shards}"
        splits.add_row(
            split.name,
            f"{split.rows}{expected}",
            shard_count,
            "no (damaged)" if split.damage else "yes" if split.complete else "no",
            ", ".join(split.modalities) or "labels only",
            str(len(split.failures)),
            str(split.ignored_videos),
            _size(split.bytes),
        )
    console.print(splits)

    if any(split.failures for split in cache.splits.values()):
        console.print("Failures by reason")
        failures = Table()
        for column in ("split", "reason", "modality", "count"):
            failures.add_column(column, justify="right" if column == "count" else "left")
        for split in cache.splits.values():
            counts: dict[tuple[str, str], int] = {}
            for failure in split.failures:
                key = (str(failure.get("reason", "unknown")), str(failure.get("modality", "all")))
                counts[key] = counts.get(key, 0) + 1
            for (reason, modality), clips in sorted(counts.items()):
                failures.add_row(split.name, reason, modality, str(clips))
        console.print(failures)

    for split in cache.splits.values():
        if split.stats:
            console.print(f"split '{split.name}': {_stage_times(split.stats)} ({count(len(split.shards), 'shard')})")
    for damage in cache.damage:
        console.print(f"damaged: {damage.line}.")
    for split in cache.splits.values():
        if not split.complete and not split.damage:
            gaps = split.missing_shards or [u["index"] for u in split.unfinished_shards]
            if not gaps and split.expected_rows is None and split.expected_shards is None:
                console.print(
                    f"split '{split.name}' is incomplete (its extraction was interrupted or is still running); "
                    f"{finish_hint(split.name)}."
                )
                continue
            console.print(
                f"split '{split.name}' is incomplete (missing shards: {index_ranges(gaps) or 'none'}); "
                f"{finish_hint(split.name)}."
            )


@app.command("status")
def status(
    path: Path = typer.Argument(..., help="The cache folder (also while `emo extract` tasks are writing it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Show which shards of each split are finished, being written, or missing."""
    from rich.table import Table

    from emo.cache import cache_status
    from emo.cache.layout import finish_hint
    from emo.cache.locks import describe as describe_lock
    from emo.errors import require_path
    from emo.cache.launches import last_launch

    require_path(path, "Feature cache", "create it with `emo extract --cache PATH`")
    launch = last_launch(path)
    state = cache_status(path, (launch or {}).get("expected_shards"))
    if as_json:
        typer.echo(json.dumps({**state.to_dict(), "launch": launch}, indent=1))
        return
    console = make_console(highlight=False)
    if launch:
        console.print(
            f"{path}: last launch {launch['title']}, {count(len(launch.get('tasks', {})), 'task')} "
            f"of --num-shards {launch.get('num_shards')}; logs in {launch['folder']}/"
        )
    for holder in state.locks:
        console.print(f"writer lock {describe_lock(holder)}")
    if not state.splits:
        console.print(f"{path}: no shard written yet and no launch recorded.")
        return
    table = Table()
    for column in ("split", "shards", "finished", "in progress", "missing", "complete"):
        table.add_column(column, justify="left" if column in ("split", "complete") else "right")
    for split in state.splits.values():
        missing = len(split.missing) + len(split.stale)
        table.add_row(
            split.name,
            "?" if split.shards is None else str(split.shards),
            str(len(split.finished)),
            str(len(split.in_progress)),
            str(missing),
            "yes" if split.complete else "no",
        )
    console.print(table)
    for split in state.splits.values():
        for label, indices in (
            ("in progress", split.in_progress),
            ("missing", split.missing),
            ("stale (a dead writer's leftovers)", split.stale),
        ):
            if indices:
                console.print(f"{split.name} {label}: shards {index_ranges(indices)}")
        if split.shards is None and not split.complete and not split.in_progress:
            # The plan (how many shards) is written when a split finishes: an interrupted run leaves none.
            console.print(
                f"{split.name}: shard count unknown (its extraction stopped before the end, or is still running); "
                f"{finish_hint(split.name)}."
            )
    if state.complete:
        console.print(f"{path} is complete.")
    elif not state.started:
        console.print(f"{path}: no task has written a shard yet.")


@app.command("verify")
def verify(path: Path = typer.Argument(..., help="The cache folder to check.")) -> None:
    """Recompute every shard's checksum; exit 1 naming the shards that do not match."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from emo.cache import open_cache, verify_cache
    from emo.cache.metadata import unsealed_files

    cache = open_cache(path)
    total = cache.bytes
    console = make_console(stderr=True, highlight=False)
    if console.is_terminal:  # a bar; in a log a transient bar would leave only an empty line
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("verify", total=total or 1)
            problems = verify_cache(path, on_shard=lambda _label, size: progress.advance(task, size))
    else:
        problems = verify_cache(path)
    old = unsealed_files(path)
    if old:  # not a failure: caches written before the seal still load
        console.print(
            f"warning: {count(len(old), 'metadata file')} ({', '.join(old[:3])}{', ...' if len(old) > 3 else ''}) "
            f"carry no digest (written by an older emo), so hand edits to them cannot be caught; "
            f"`emo cache upgrade {path}` adds the digests."
        )
    if problems:
        if len(problems) > 1:  # one problem is said by the error sentence alone
            for problem in problems:
                console.print(f"  {problem}")
        more = f" (and {len(problems) - 1} more problems listed above)" if len(problems) > 1 else ""
        raise CacheError(f"Feature cache {path} failed verification: {problems[0].rstrip('.')}{more}.")
    shards = sum(len(s.shards) for s in cache.splits.values())
    shards += sum(part.shards for item in cache.sets.values() for part in item.splits.values())
    matched = f"all {count(shards, 'shard')} match their" if shards != 1 else "its 1 shard matches its"
    typer.echo(f"{path}: {matched} checksums ({_size(total)} verified).")


@app.command("rm")
def rm(
    path: Path = typer.Argument(..., help="The cache folder."),
    set_name: str = typer.Option(
        ..., "--set", help="The feature set to remove, e.g. audio/whisper-base (or whisper-base)."
    ),
) -> None:
    """Remove one feature set; the row table and every other set stay as they are."""
    from emo.cache.maintenance import remove_set

    removed = remove_set(path, set_name)
    typer.echo(f"removed feature set {removed['name']} ({removed.get('encoder', '')}) from {path}")


@app.command("upgrade")
def upgrade(
    path: Path = typer.Argument(..., help="A cache written by emo before feature sets (cache version 1)."),
) -> None:
    """Convert a version-1 cache into feature sets in place (nothing is re-extracted)."""
    from emo.cache.maintenance import upgrade_cache

    report = upgrade_cache(path)
    if report.already and report.sealed:
        typer.echo(
            f"{path} is a version-2 cache; added the digest to {count(len(report.sealed), 'metadata file')} "
            f"written by an older emo ({', '.join(report.sealed[:3])}{', ...' if len(report.sealed) > 3 else ''})."
        )
        return
    if report.already:
        typer.echo(f"{path} is already a version-2 cache; nothing to do.")
        return
    rows = ", ".join(f"{split} {n} rows" for split, n in report.splits.items())
    typer.echo(f"upgraded {path}: {rows}; feature sets {', '.join(report.sets)}")
    if report.skipped_shards:
        typer.echo(
            f"{count(len(report.skipped_shards), 'unfinished shard')} left out ({', '.join(report.skipped_shards[:5])}); "
            "re-run the `emo extract` that made the cache to finish them."
        )
