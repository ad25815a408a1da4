"""The iPad registry in the state database: what the devices said (check-ins, command answers,
facts) and what werne sent them.

`registry.Registry` is the one entry point: the webhook receiver feeds it batches of parsed events
(`apply_events`), the ipad actions read it and record what they enqueue. A batch is applied by one
handler per device message (`messages`, like NanoMDM's service: Authenticate, TokenUpdate,
CheckOut, DeclarativeManagement, command reports), then by the observers the registry was built
with (`observers`: lost-mode locations always, the Activation Lock escrow where a key is set), all
in the batch's transaction. `devices.Device` is the typed view of a device with its facts.
"""
