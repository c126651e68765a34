"""The search: its loop and gates, the ledger of trials, reuse, the reference, the confirmation."""
