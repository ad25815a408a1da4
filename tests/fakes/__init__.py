"""The fakes of Apple's servers and devices (the only fakes in the suite), each beside the contract
test that proves it answers as the real service does."""
