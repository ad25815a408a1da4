"""`werne inventory`: validate the site inventory (hosts.yml, schools.yml, ipads.csv)."""

from __future__ import annotations

from pathlib import Path

import click

from commands import render
from commands.context import AppContext, finish, pass_app
from commands.options import json_option


@click.group()
def inventory() -> None:
    """Validate and show the site inventory.

    Example:

        werne inventory check
    """


@inventory.command("check")
@click.argument("folder", metavar="[DIR]", required=False, type=click.Path(path_type=Path))
@json_option()
@pass_app
def inventory_check(app: AppContext, folder: Path | None, as_json: bool) -> None:
    """Validate hosts.yml, schools.yml and ipads.csv; print every problem with file and line.

    DIR is the inventory folder to check (default: the configured inventory), so an inventory can
    be checked before any config points at it.

    Example:

    \b
        werne --config werne.toml inventory check
        werne inventory check inventories/example-city
    """
    from core.inventory import check_inventory

    result = check_inventory(folder if folder is not None else app.config.inventory_dir)
    if as_json:
        render.json_out(result.to_dict())
    for p in result.problems:
        render.error(p)
    if result.ok and not as_json:
        render.line(f"{result.root}: ok: {result.laptops} laptops, {result.vpn_gateways} VPN gateway(s), "
                    f"{result.schools} schools, {result.ipads} iPads, {result.appletvs} Apple TVs")
    finish(result)
