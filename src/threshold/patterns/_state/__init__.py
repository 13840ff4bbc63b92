"""Private parts of the P5 state machine: the row format, the write, proposals, reports."""
