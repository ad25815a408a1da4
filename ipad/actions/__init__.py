"""The `werne ipad` use cases, each over the registry (ipad.store) and the dispatcher (ipad.dispatch):
list, query (and the nightly queries), configure, lock and clear passcode, lost mode, wipe (with
Return to Service and the licences it frees), Activation Lock escrow, moves and retirement."""
