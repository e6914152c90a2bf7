"""The delivery ledger: plan, claim, mark, record; the send loop and its group commit;
leases; local time; provider events applied to rows and readers.
"""
