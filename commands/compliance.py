"""`werne compliance` (run the checks, verify the stored history, compare runs) and `werne report`
(write a run's report)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from commands import render
from commands.context import AppContext, finish, pass_app
from commands.options import ID, json_option
from core.errors import EXIT_INPUT

if TYPE_CHECKING:
    from compliance.collect_laptops import Progress

DIFF_COLUMNS = (render.Col(14), render.Col(26), render.Col())


@click.group()
def compliance() -> None:
    """Run the compliance checks, verify the stored history, compare runs.

    Example:

        werne compliance run --all
    """


@compliance.command("run")
@click.option("--laptops", "fleet", flag_value="laptops", help="Check the laptops (and the VPN) only.")
@click.option("--ipads", "fleet", flag_value="ipads", help="Check the iPads only.")
@click.option("--all", "fleet", flag_value="all", default=True, help="Check both fleets (the default).")
@click.option("--timings", is_flag=True,
              help="Also print where the run's time went (each step's wall and CPU time; always stored with the run).")
@json_option("the run summary")
@pass_app
def compliance_run(app: AppContext, fleet: str, timings: bool, as_json: bool) -> None:
    """Collect facts, evaluate the baselines, apply waivers and store the run.

    Exit codes: 0 every device compliant, 1 findings (fail, error or unreachable),
    2 bad input or configuration, 3 could not run (e.g. another run holds the lock).

    Example:

        werne compliance run --timings
    """
    from compliance.run import FLEETS, run_compliance

    fleets = FLEETS if fleet == "all" else (fleet,)
    progress = render.ProgressLine(enabled=not as_json)

    def show(p: Progress) -> None:
        progress.show(f"{p.fleet}: {p.done}/{p.total} {p.device} {p.status} {p.message}")

    summary = run_compliance(app.config, app.db, app.inventory, fleets, progress=show)
    progress.close()
    if as_json:
        render.json_out({**summary.to_dict(), **({"timings": summary.timings} if timings else {})})
    else:
        if summary.recovered_stale_lock:
            render.to_stderr("note: recovered a stale lock left by a run that died")
        c = summary.counts
        render.line(f"run {summary.run_id}: {summary.compliant_devices}/{summary.devices} devices compliant, "
                    f"pass rate {summary.pass_rate * 100:.1f} %; pass {c['pass']}, fail {c['fail']}, "
                    f"error {c['error']}, unreachable {c['unreachable']}, waived {c['waived']}, "
                    f"not applicable {c['not_applicable']}")
        if summary.report_path:
            render.line(f"report: {summary.report_path}")
        if timings and summary.timings:
            from compliance.timings import table_rows

            render.timings(table_rows(summary.timings))
    if summary.signing_problem:
        render.to_stderr(f"warning: {summary.signing_problem}")
    finish(summary)


@compliance.command("worker")
@click.option("--until-empty", is_flag=True, help="Stop when the queue has no shard left (else run until stopped).")
@pass_app
def compliance_worker(app: AppContext, until_empty: bool) -> None:
    """Run shards of sharded nightly runs ([compliance] shards > 1) from the PostgreSQL job queue.

    The nightly run's leader (`werne compliance run`) hands out the shards; run one worker per
    core or machine (the server install adds a systemd unit). SIGTERM ends it after its shard.
    Exit codes: 0 stopped, 2 bad configuration (e.g. SQLite), 3 could not run.

    Example:

        werne compliance worker
    """
    from compliance.shards import run_worker

    run_worker(app.config, app.db, wait=not until_empty)


@compliance.command("verify")
@click.option("--signed", "documents", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Also check this file's detached signature (FILE.sig); repeatable.")
@json_option()
@pass_app
def compliance_verify(app: AppContext, documents: tuple[Path, ...], as_json: bool) -> None:
    """Check, offline, the hash chains of the runs and of the audit trail, and every signature.

    Names each altered, deleted or unsigned record; exit 1 if there is any.

    Example:

        werne compliance verify --signed compliance-42.oscal.json
    """
    from compliance.evidence_verify import verify_evidence

    rep = verify_evidence(app.db, app.config, list(documents))
    if as_json:
        render.json_out(rep.to_dict())
    else:
        if rep.ok:
            signed = f"key sha256:{rep.key[:16]}" if rep.key else "signatures not checked: no key configured"
            render.line(f"ok: {rep.runs_checked} run(s), chain head {rep.head or 'none'}; {rep.audit_checked} audit "
                        f"event(s) chained ({rep.audit_unchained} from before the chain), head "
                        f"{rep.audit_head or 'none'}; {rep.heads_signed} signed head(s), {len(rep.documents)} signed "
                        f"document(s), {signed}")
        for p in rep.problems:
            render.error(p)
    finish(rep)


@compliance.command("bsi-documents")
@click.option("--run", "run_id", type=ID, help="Run id (default: the latest complete run).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Directory to write to.")
@pass_app
def compliance_bsi_documents(app: AppContext, run_id: int | None, out_dir: str) -> None:
    """Write the BSI reference documents A.1 (Strukturanalyse) and A.4 (IT-Grundschutz-Check).

    As XLSX and CSV, from the newest run: A.4 gives each requirement werne's rules judge a status
    with the run's figures and date, and lists the other requirements of the same modules as
    "nicht geprüft".

    Example:

        werne compliance bsi-documents --out audit-2026/
    """
    from compliance.evidence_docs import write_reference_documents

    docs = write_reference_documents(app.config, app.db, app.inventory, out_dir, run_id)
    for f in docs.files:
        render.line(str(f))
    render.line(f"run {docs.run_id}: {docs.judged} requirement(s) judged, "
                f"{docs.a4_rows - docs.judged} not judged by werne")


@compliance.command("diff")
@click.argument("run_a", type=ID)
@click.argument("run_b", type=ID)
@json_option("the changes")
@pass_app
def compliance_diff(app: AppContext, run_a: int, run_b: int, as_json: bool) -> None:
    """Print what changed between two runs: newly failing first, then fixed, then still failing.

    Example:

        werne compliance diff 41 42
    """
    from compliance.diff import diff_stored

    d = diff_stored(app.db, run_a, run_b)
    sections = [("newly failing", d.newly_failing), ("fixed", d.fixed), ("still failing", d.still_failing),
                ("other changes", d.changed)]
    if as_json:
        render.json_out({"run_a": d.run_a, "run_b": d.run_b,
                         **{k.replace(" ", "_"): [c.as_dict() for c in v] for k, v in sections}})
        return
    for title, changes in sections:
        render.line(f"{title} ({len(changes)}):")
        render.table(DIFF_COLUMNS, ((c.device, c.rule_id, f"{c.before or '-'} -> {c.after or '-'}  {c.evidence}")
                                    for c in changes), indent="  ")


@click.command("report")
@click.option("--run", "run_id", type=ID, help="Run id (default: the latest complete run).")
@click.option("--format", "fmt", type=click.Choice(["html", "csv", "json", "junit", "oscal"]), default="html",
              show_default=True, help="Report format (oscal: OSCAL 1.1.3 assessment results, signed "
              "when compliance.signing_key_file is set).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Output file; - writes it to stdout (not for oscal, whose signature is a file beside it).")
@pass_app
def report(app: AppContext, run_id: int | None, fmt: str, out_path: str) -> None:
    """Write the report of a compliance run: HTML, CSV (German Excel), JSON, JUnit XML or OSCAL.

    Example:

        werne report --format oscal --out compliance.oscal.json
    """
    from compliance.reports import render as render_report
    from compliance.reports import write_report

    if out_path == "-":
        if fmt == "oscal":
            raise click.BadParameter("an OSCAL report is written to a file (its signature goes beside it)",
                                     param_hint="'--out -'")
        render.data(render_report(app.db, run_id, fmt))
        return
    if fmt != "oscal":
        render.line(str(write_report(app.db, run_id, fmt, out_path)))
        return
    from compliance.oscal import write_oscal

    written = write_oscal(app.config, app.db, run_id, out_path)
    render.line(str(written.path))
    if written.signature:
        render.line(f"signature: {written.signature}")
    if written.problem:
        render.error(written.problem)
        sys.exit(EXIT_INPUT)
