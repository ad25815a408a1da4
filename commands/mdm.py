"""`werne mdm`: the NanoMDM side (webhook receiver, push certificate, SCEP, enrolment profile,
live checks, NanoMDM's database schema)."""

from __future__ import annotations

import click

from commands import render
from commands.context import AppContext, finish, pass_app
from commands.options import json_option, max_devices_option, serials_argument

CHECK_COLUMNS = (render.Col(), render.Col(12), render.Col())


@click.group()
def mdm() -> None:
    """The NanoMDM side: webhook receiver, push certificate, SCEP, enrolment profile.

    Example:

        werne mdm serve-webhook --listen 127.0.0.1:9080
    """


@mdm.command("serve-webhook")
@click.option("--listen", default=None, help="HOST:PORT to listen on. Default: mdm.webhook_listen.")
@click.option("--hmac-key-file", type=click.Path(dir_okay=False), default=None,
              help="File with the webhook HMAC key (NanoMDM's -webhook-hmac-key). "
                   "Default: mdm.webhook_hmac_key_file or $WERNE_WEBHOOK_HMAC_KEY; none: refused unless "
                   "mdm.webhook_allow_unsigned = true.")
@pass_app
def mdm_serve_webhook(app: AppContext, listen: str | None, hmac_key_file: str | None) -> None:
    """Receive NanoMDM's webhook events and store check-ins and command results (runs until stopped).

    Example:

        werne mdm serve-webhook --listen 127.0.0.1:9080 --hmac-key-file /etc/werne/webhook_hmac_key
    """
    from core.signals import default_termination
    from ipad.actions.activation_lock import escrow_observers
    from ipad.dispatch import open_registry
    from ipad.webhook import hmac_key, serve

    cfg = app.config.mdm
    key = hmac_key(cfg, hmac_key_file)
    default_termination()  # uvicorn stops cleanly on SIGTERM by itself (systemd's stop)
    # Bypass codes are escrowed encrypted, or dropped when no key is set.
    registry = open_registry(app.db, app.inventory, escrow_observers(app.config))
    serve(registry, listen or cfg.webhook_listen, key, cfg.webhook_max_body, cfg.webhook_batch_ms,
          cfg.webhook_batch_max)


@mdm.group("push-cert")
def mdm_push_cert() -> None:
    """The APNs push certificate: key and CSR, install the signed certificate, show it (docs/go-live.md).

    Example:

        werne mdm push-cert csr --out push.csr
    """


@mdm_push_cert.command("csr")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the CSR (PEM) here. Default: print it.")
@pass_app
def mdm_push_cert_csr(app: AppContext, out_path: str | None) -> None:
    """Make the push certificate key (once, mode 0600) and a CSR for the vendor signing step.

    Example:

        werne mdm push-cert csr --out push.csr
    """
    from core.files import write_output
    from ipad.golive.push_cert import make_csr

    result = make_csr(app.config)
    if out_path:
        write_output(out_path, result.csr_pem)
        render.line(f"CSR written to {out_path}; key {'created' if result.key_created else 'kept'}: "
                    f"{result.key_file}")
    else:
        render.block(result.csr_pem.decode())


@mdm_push_cert.command("install")
@click.argument("cert_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Install even if the topic differs from the installed one "
                                            "(every iPad must then be enrolled again).")
@pass_app
def mdm_push_cert_install(app: AppContext, cert_file: str, force: bool) -> None:
    """Check the certificate Apple signed, upload it with its key to NanoMDM, and record it.

    Example:

        werne mdm push-cert install MDM_Stadt_Werne_Certificate.pem
    """
    from core.files import read_input
    from ipad.golive.push_cert import install_push_cert
    from mdm_client.factory import nanomdm_client

    data = read_input(cert_file, "certificate", limit=1024 * 1024)
    installed = install_push_cert(app.config, app.db, nanomdm_client(app.config), data, source=cert_file, force=force)
    render.line(f"installed push certificate {installed.topic}, valid until {installed.not_after:%Y-%m-%d}")


@mdm.command("enrolment-profile")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Write the signed profile (.mobileconfig, CMS DER) here.")
@pass_app
def mdm_enrolment_profile(app: AppContext, out_path: str) -> None:
    """Write the signed MDM enrolment profile, for iPads enrolled by hand (Apple Configurator).

    Example:

        werne mdm enrolment-profile --out enrol.mobileconfig
    """
    from core.files import write_output
    from ipad.payloads.enrolment_profile import signed_enrolment_profile

    data = signed_enrolment_profile(app.config, app.db)
    write_output(out_path, data, mode=0o600)  # it carries the SCEP challenge: readable by its owner only
    render.line(f"signed enrolment profile written to {out_path} ({len(data)} bytes)")


@mdm.group("scep")
def mdm_scep() -> None:
    """The SCEP CA and server that issue the iPads' device identities (micromdm/scep).

    Example:

        werne mdm scep init
    """


@mdm_scep.command("init")
@click.option("--import-ca-cert", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Use this existing CA certificate (PEM) instead of making one; needs --import-ca-key.")
@click.option("--import-ca-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The existing CA's RSA key (unencrypted PEM).")
@json_option()
@pass_app
def mdm_scep_init(app: AppContext, import_ca_cert: str | None, import_ca_key: str | None, as_json: bool) -> None:
    """Make (or import) the SCEP CA in scepserver's depot layout, and the challenge (mode 0600); idempotent.

    Example:

        werne mdm scep init
    """
    from pathlib import Path

    from ipad.golive.scep_ca import init_scep_ca

    ca = init_scep_ca(app.config, Path(import_ca_cert) if import_ca_cert else None,
                      Path(import_ca_key) if import_ca_key else None)
    if as_json:
        render.json_out(ca.to_dict())
        return
    render.line(f"SCEP CA {'created' if ca.created else 'kept'}: {ca.subject}")
    render.line(f"  depot:      {ca.depot} (scepserver -depot; NanoMDM -ca {ca.ca_cert})")
    render.line(f"  challenge:  {ca.challenge_file}")
    render.line(f"  sha256:     {ca.fingerprint_sha256}")


@mdm_scep.command("check")
@click.option("--url", default=None, help="SCEP URL to ask. Default: scep.url.")
@json_option()
@pass_app
def mdm_scep_check(app: AppContext, url: str | None, as_json: bool) -> None:
    """Ask the SCEP server for its capabilities and CA, and compare the CA with the local depot's.

    Example:

        werne mdm scep check --url http://127.0.0.1:9002/scep
    """
    from ipad.golive.scep_ca import check_scep_server
    from mdm_client.scep import SCEPClient

    result = check_scep_server(app.config, SCEPClient(url or app.config.scep.url, timeout=app.config.scep.timeout))
    if as_json:
        render.json_out(result.to_dict())
        return
    same = {True: "werne's CA", False: "another CA", None: "no local depot to compare"}[result.matches_depot]
    render.line(f"{result.url}: {', '.join(result.caps)}")
    render.line(f"CA {result.ca_subject} ({same}), sha256 {result.ca_fingerprint_sha256}")


@mdm.command("check")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CA bundle to trust for the HTTPS front. Default: mdm.tls_ca_file, else the system's.")
@json_option()
@pass_app
def mdm_check(app: AppContext, ca_file: str | None, as_json: bool) -> None:
    """Check a live installation, one line per check: TLS, NanoMDM API, push certificate, SCEP,
    enrolment endpoint, MachineInfo verification, webhook receiver, NanoDEP token, KMFDDM, and what
    expires (SCEP CA, tokens, signing certificate, the iPads' identities). Exit 1 if any check fails.
    Also writes werne_mdm.prom for node_exporter ([metrics] textfile_dir).

    Example:

        werne mdm check --json
    """
    from pathlib import Path

    from enrolment.live_check import CheckReport, run_checks, write_check_metrics

    report = CheckReport(run_checks(app.config, app.db, Path(ca_file) if ca_file else None))
    unwritten = write_check_metrics(app.config, report.checks)
    if unwritten:
        render.to_stderr(f"note: metrics file not written: {unwritten}")
    if as_json:
        render.json_out({"ok": report.ok, "checks": [r.to_dict() for r in report.checks]})
    else:
        render.table(CHECK_COLUMNS, (("ok  " if r.ok else "FAIL", r.name, r.detail) for r in report.checks))
    finish(report)


@mdm.command("db-init")
@pass_app
def mdm_db_init(app: AppContext) -> None:
    """Load NanoMDM's PostgreSQL schema (from the installed NanoMDM module) once; idempotent.

    The DSN comes from mdm.storage_dsn_file or $NANOMDM_STORAGE_DSN, never the command line.

    Example:

        NANOMDM_STORAGE_DSN='host=/run/postgresql dbname=nanomdm user=nanomdm' werne mdm db-init
    """
    from ipad.golive.nanomdm_db import load_schema, storage_dsn

    result = load_schema(storage_dsn(app.config))
    render.line(f"NanoMDM schema {'loaded' if result.created else 'already there'} ({result.tables} tables; "
                f"from {result.schema_file})")


@mdm_push_cert.command("show")
@json_option()
@pass_app
def mdm_push_cert_show(app: AppContext, as_json: bool) -> None:
    """Show the installed push certificate: topic, expiry, who installed it.

    Example:

        werne mdm push-cert show --json
    """
    from datetime import UTC, datetime

    from ipad.golive.push_cert import show_push_cert

    cert = show_push_cert(app.db)
    if as_json:
        render.json_out(cert.to_dict())
        return
    days = (cert.not_after - datetime.now(UTC)).days
    render.line(f"topic:      {cert.topic}")
    render.line(f"expires:    {cert.not_after:%Y-%m-%d %H:%M} UTC ({days} days)")
    render.line(f"serial:     {cert.serial}")
    render.line(f"installed:  {cert.installed_at:%Y-%m-%d %H:%M} UTC by {cert.installed_by}")


RENEW_PLAN_COLUMNS = (render.Col(13), render.Col(12), render.Col(10), render.Col(11), render.Col(11), render.Col())


@mdm.command("renew")
@serials_argument()
@click.option("--plan", "show_plan", is_flag=True,
              help="Only show who is due when (nothing is sent): every enrolled iPad's identity expiry, "
                   "the day its renewal goes out, and what stands in the way.")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True,
              help="With --plan: list the iPads planned within this many days (and every problem); "
                   "--json lists all.")
@max_devices_option
@click.option("--deadline", "deadline", type=float, default=None,
              help="Seconds to wait for the iPads' answers (default: scep.renew_deadline_s).")
@json_option()
@pass_app
def mdm_renew(app: AppContext, serials: tuple[str, ...], show_plan: bool, days: int, max_devices: int | None,
              deadline: float | None, as_json: bool) -> None:
    """Renew the iPads' device identities before they expire: today's share of the due ones (at most
    scep.renew_daily_budget a day, soonest expiry first), or the named iPads now, by re-sending the
    enrolment profile; audited. Exit 1 if an iPad answered Error or did not answer (both are tried
    again on a later run; the old identity keeps working). Run nightly (werne-renew.timer).

    Example:

        werne mdm renew --plan
    """
    from datetime import timedelta

    from commands.context import ipad_context
    from ipad.golive.renewal import plan_renewals, renew_identities

    ctx = ipad_context(app)
    if show_plan:
        plan = plan_renewals(ctx)
        if as_json:
            render.json_out(plan.to_dict())
            finish(plan)
        horizon = plan.today + timedelta(days=days)
        shown = [i for i in plan.items if i.state not in ("planned",) or (i.planned_on and i.planned_on <= horizon)
                 or i.late]
        render.line(f"{len(plan.items)} enrolled iPads; renewal {plan.renew_days} days before expiry, at most "
                    f"{plan.budget} a day ({plan.sent_today} sent today); SCEP CA {plan.current_ca}")
        render.table(RENEW_PLAN_COLUMNS, [("serial", "school", "state", "expires", "renew on", "detail")] + [
            (i.serial, i.school or "-", i.state + (" LATE" if i.late else ""),
             f"{i.expires:%Y-%m-%d}" if i.expires else "-", f"{i.planned_on}" if i.planned_on else "-", i.detail)
            for i in shown])
        later = [i for i in plan.items if i not in shown]
        if later:
            first = min(i.planned_on for i in later if i.planned_on)
            render.line(f"{len(later)} more planned later (first on {first})")
        finish(plan)
    report = renew_identities(ctx, serials, max_devices=max_devices, deadline_s=deadline)
    if as_json:
        render.json_out(report.to_dict())
        finish(report)
    render.device_lines((o.serial, o.school, o.ok, o.summary()) for o in report.outcomes)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts().items())) or "nothing due today"
    render.line(f"{counts}; {report.due} due, at most {report.budget} a day ({report.seconds:.0f} s)")
    finish(report)


@mdm_scep.command("rotate")
@json_option()
@pass_app
def mdm_scep_rotate(app: AppContext, as_json: bool) -> None:
    """Start a SCEP CA rotation: a new CA signs every new and renewed identity, the old one stays
    trusted beside it (NanoMDM's -ca bundle) until every iPad has renewed; audited.

    Then restart scepserver and NanoMDM, let `werne mdm renew` replace the old identities (they are
    due at once, within the daily budget) and finish with `werne mdm scep retire-old`.

    Example:

        werne mdm scep rotate
    """
    from ipad.golive.scep_ca import rotate_scep_ca

    result = rotate_scep_ca(app.config, app.db)
    if as_json:
        render.json_out(result.to_dict())
        return
    render.line(f"new SCEP CA: {result.current_subject} (sha256 {result.current_fingerprint_sha256}), valid until "
                f"{result.current_not_after:%Y-%m-%d}")
    render.line(f"trusted beside it until every iPad has renewed: {', '.join(result.retired)}")
    render.line(f"trust bundle (NanoMDM -ca): {result.trust_bundle}")
    render.line("next: systemctl restart scepserver nanomdm; werne mdm renew --plan")


@mdm_scep.command("retire-old")
@click.option("--force", is_flag=True, help="Retire the old CA although iPads still hold identities from it "
                                            "(they stop reaching the MDM).")
@json_option()
@pass_app
def mdm_scep_retire_old(app: AppContext, force: bool, as_json: bool) -> None:
    """Finish a SCEP CA rotation: trust only the current CA, once no enrolled iPad holds an identity
    from the old one (refused otherwise); audited. Restart NanoMDM afterwards.

    Example:

        werne mdm scep retire-old
    """
    from commands.context import ipad_context
    from ipad.golive.renewal import plan_renewals
    from ipad.golive.scep_ca import retire_old_cas

    holding = plan_renewals(ipad_context(app)).holding_old_identities()
    result = retire_old_cas(app.config, app.db, holding, force=force)
    if as_json:
        render.json_out(result.to_dict())
        return
    if not result.retired:
        render.line(f"nothing to retire: NanoMDM trusts only {result.current_subject}")
        return
    render.line(f"retired: {', '.join(result.retired)}; NanoMDM now trusts only {result.current_subject}")
    render.line("next: systemctl restart nanomdm")


EXPIRY_COLUMNS = (render.Col(6), render.Col(22), render.Col(11), render.Col(9, right=True), render.Col(6, right=True),
                  render.Col())


@mdm.command("expiry")
@json_option()
@pass_app
def mdm_expiry(app: AppContext, as_json: bool) -> None:
    """Everything that expires, in one view: push certificate, SCEP CA, Apple School Manager token,
    Apps and Books tokens, TLS certificate, profile-signing certificate, and the iPads' identities
    (counted by month); each with days left and its limit. Exit 1 if one is within its limit or
    cannot be read.

    Example:

        werne mdm expiry --json
    """
    from ipad.golive.expiry import ExpiryReport, expiry_items

    report = ExpiryReport(expiry_items(app.config, app.db))
    if as_json:
        render.json_out(report.to_dict())
        finish(report)
    rows = [("", "item", "expires", "days left", "limit", "detail")]
    for i in report.items:
        left = i.days_left()
        rows.append(("ok" if i.ok else "FAIL", i.item, f"{i.expires:%Y-%m-%d}" if i.expires else "-",
                     f"{left:.0f}" if left is not None else "-", str(i.limit_days),
                     i.error or (i.summary() if i.item == "identities" else i.detail)))
    render.table(EXPIRY_COLUMNS, rows)
    ident = next((i for i in report.items if i.item == "identities"), None)
    if ident is not None and ident.by_month:
        months = ", ".join(f"{m} {n}" for m, n in sorted(ident.by_month.items()))
        render.line(f"identities by month of expiry: {months}")
    finish(report)
