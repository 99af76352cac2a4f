"""Pop consumption state on the masters (issue 18): a plain state machine
(`state.py`), its system records (`records.py`) and receipt handles
(`handles.py`). docs/design.md, "Pop state"."""
