"""The console's screens: fleet, bank, transactions, events, provisioning."""
