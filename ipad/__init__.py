"""The iPad side: what werne sends to school iPads through NanoMDM and KMFDDM, and what they answer.

    errors      the package's exception tree (root: IPadError)
    models      the tables (devices, command results, webhook events, licences, escrow, returns)
    commands    builders of the Apple MDM commands; results: parsing what devices send back
    store/      the registry: what devices said, fed by the webhook, read by the actions
    dispatch    context, targets, blast radius, sending commands and waiting, audit records
    actions/    the `werne ipad` use cases: list, query, configure, lock, lost mode, wipe, ...
    payloads/   profiles, declarations, Apple's schemas, IKEv2, the enrolment profile
    ddm/        declarative management: group sets, status reports, OS update enforcement
    apps/       the app list, Apps and Books licences, the app status fact
    golive/     the push certificate, the SCEP CA, NanoMDM's PostgreSQL schema
    webhook/    the receiver NanoMDM posts check-ins and command reports to

The API clients these use are in mdm_client (one module per server, one factory).
"""
