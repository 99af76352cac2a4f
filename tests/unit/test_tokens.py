"""Receipt handles and transaction ids share core/tokens.py: tokens issued
before the share (pinned below, made by the former per-module code) still
decode, and the same inputs still give the same bytes."""

from __future__ import annotations

import pytest

from core.errors import InvalidReceiptError, InvalidTransactionError
from core.pop.handles import Receipt, broker_of, decode_handle, encode_handle, handle_key
from core.transactions import TxnId, decode_id, encode_id, txn_key
from core.transactions import broker_of as txn_broker_of

pytestmark = pytest.mark.unit

HANDLE_KEY = "249e6a9dca65b71631c8b7604be37205c99d04914558fea79103ffe6e49c2452"
HANDLE = "v1.YnJva2VyLWF8Z3xUfDN8NDJ8Nw.Zt-mvEOWO7xObryqI0oq7w"
NO_SECRET_HANDLE = "v1.YnxnfFR8MHwwfDA.0TA-axqDWqtVwFFGlcpf1Q"
TXN_KEY = "419cb1219e135c045a00f10477d2d9387d0d68e356df2dd46f6ded69628e5414"
TXN_ID = "t1.YnJva2VyLWF8NDJ8MDBmZjAwZmYwMGZmMDBmZg.t5q8V49D2zoU0WncORMR_g"


def test_keys_and_handles_are_byte_identical_to_those_issued_before() -> None:
    key = handle_key("s3cret", "broker-a")
    assert key.hex() == HANDLE_KEY
    receipt = Receipt("broker-a", "g", "T", 3, 42, 7)
    assert encode_handle(key, receipt) == HANDLE
    assert decode_handle(key, HANDLE) == receipt
    assert broker_of(HANDLE) == "broker-a"
    assert decode_handle(handle_key("", "b"), NO_SECRET_HANDLE) == Receipt("b", "g", "T", 0, 0, 0)


def test_transaction_ids_are_byte_identical_to_those_issued_before() -> None:
    key = txn_key("s3cret", "broker-a")
    assert key.hex() == TXN_KEY
    txn = TxnId("broker-a", 42, "00ff00ff00ff00ff")
    assert encode_id(key, txn) == TXN_ID
    assert decode_id(key, TXN_ID) == txn
    assert txn_broker_of(TXN_ID) == "broker-a"


def test_a_token_of_one_kind_is_refused_as_the_other() -> None:
    with pytest.raises(InvalidReceiptError):
        decode_handle(handle_key("s3cret", "broker-a"), TXN_ID)
    with pytest.raises(InvalidTransactionError):
        decode_id(txn_key("s3cret", "broker-a"), HANDLE)
    with pytest.raises(InvalidReceiptError):
        broker_of(TXN_ID)
    with pytest.raises(InvalidTransactionError):
        txn_broker_of(HANDLE)


@pytest.mark.parametrize("bad", ["", "v1", "v1.a.b.c", "v1.!!.x", "v1." + "A" * 2000 + ".x", "v1.__8.AA"])
def test_malformed_handles_are_refused_as_before(bad: str) -> None:
    with pytest.raises(InvalidReceiptError):
        decode_handle(handle_key("s3cret", "broker-a"), bad)
    with pytest.raises(InvalidReceiptError):
        broker_of(bad)
