"""`modelport loadtest`: drive an OIP v2 endpoint and measure it without coordinated omission.

inputs (what to send) → runner + worker processes (sending, recording) →
report (numbers) → display (tables, plots); session ties them for the CLI.
"""
