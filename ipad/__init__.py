"""The iPad side: command and profile builders, the device store, parsed results, the use cases
behind `werne ipad ...` and the webhook receiver that NanoMDM posts to."""
