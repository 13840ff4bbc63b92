"""The IBM Telco customers, loaded from CSV and validated row by row.

The file is read as bytes and split into physical lines, and each line is decoded and
parsed on its own: a stray quote or a non-UTF-8 byte then spoils one row (reported with
its physical line number and column) instead of the rest of the file. Blank lines carry no
data and are passed over.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from threshold.errors import ConfigError, DataError

DATA_DIR: Final = Path(__file__).parent / "data"
FULL_CSV: Final = "telco_customer_churn_full.csv"
SUBSET_CSV: Final = "telco_customer_churn_subset.csv"

Contract = Literal["Month-to-month", "One year", "Two year"]
InternetAddOn = Literal["Yes", "No", "No internet service"]
HeuristicLabel = Literal["renewed", "renewed_with_offer", "churned", "restructured", "escalated"]


def data_file(name: str) -> Path:
    """The path of a file shipped in this package's ``data/`` folder (see its SOURCES.md)."""
    path = DATA_DIR / name
    if path.parent != DATA_DIR or not path.is_file():
        raise ConfigError(f"no packaged data file {name!r} in {DATA_DIR}")
    return path


class Customer(BaseModel):
    """One customer row of the Telco data set, with typed, checked values."""

    # strict: a Customer built in code gets the same checks as one parsed from the CSV.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    customer_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    gender: Literal["Female", "Male"]
    senior_citizen: bool
    partner: bool
    dependents: bool
    tenure_months: int = Field(ge=0)
    phone_service: bool
    multiple_lines: Literal["Yes", "No", "No phone service"]
    internet_service: Literal["DSL", "Fiber optic", "No"]
    online_security: InternetAddOn
    online_backup: InternetAddOn
    device_protection: InternetAddOn
    tech_support: InternetAddOn
    streaming_tv: InternetAddOn
    streaming_movies: InternetAddOn
    contract: Contract
    paperless_billing: bool
    payment_method: Literal[
        "Electronic check",
        "Mailed check",
        "Bank transfer (automatic)",
        "Credit card (automatic)",
    ]
    monthly_charges: float = Field(gt=0, allow_inf_nan=False)
    total_charges: float | None = Field(ge=0, allow_inf_nan=False)
    churn: bool


@dataclass(frozen=True)
class LoadResult:
    """The customers that validated, and the (line, reason) of every row skipped."""

    path: str
    customers: list[Customer]
    skipped: list[tuple[int, str]] = field(default_factory=list)


class _CellError(Exception):
    """A cell that does not parse; turned into a row error naming the column."""


_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _yes_no(text: str) -> bool:
    if text not in ("Yes", "No"):
        raise _CellError(f"expected Yes or No, got {text!r}")
    return text == "Yes"


def _zero_one(text: str) -> bool:
    if text not in ("0", "1"):
        raise _CellError(f"expected 0 or 1, got {text!r}")
    return text == "1"


def _int(text: str) -> int:
    if not _INT.fullmatch(text):
        raise _CellError(f"expected a whole number, got {text!r}")
    return int(text)


def _number(text: str) -> float:
    # A regex rather than float() alone: float() also takes 'nan', 'inf' and '1_0'.
    if not _NUMBER.fullmatch(text):
        raise _CellError(f"expected a number, got {text!r}")
    return float(text)


def _blank_or_number(text: str) -> float | None:
    # The source leaves TotalCharges as a single space for customers with tenure 0.
    return None if not text.strip() else _number(text)


def _text(text: str) -> str:
    return text


# CSV column -> (Customer field, cell parser); the order is the required header.
_COLUMNS: Final[dict[str, tuple[str, Callable[[str], object]]]] = {
    "customerID": ("customer_id", _text),
    "gender": ("gender", _text),
    "SeniorCitizen": ("senior_citizen", _zero_one),
    "Partner": ("partner", _yes_no),
    "Dependents": ("dependents", _yes_no),
    "tenure": ("tenure_months", _int),
    "PhoneService": ("phone_service", _yes_no),
    "MultipleLines": ("multiple_lines", _text),
    "InternetService": ("internet_service", _text),
    "OnlineSecurity": ("online_security", _text),
    "OnlineBackup": ("online_backup", _text),
    "DeviceProtection": ("device_protection", _text),
    "TechSupport": ("tech_support", _text),
    "StreamingTV": ("streaming_tv", _text),
    "StreamingMovies": ("streaming_movies", _text),
    "Contract": ("contract", _text),
    "PaperlessBilling": ("paperless_billing", _yes_no),
    "PaymentMethod": ("payment_method", _text),
    "MonthlyCharges": ("monthly_charges", _number),
    "TotalCharges": ("total_charges", _blank_or_number),
    "Churn": ("churn", _yes_no),
}
HEADER: Final = tuple(_COLUMNS)
_COLUMN_OF_FIELD: Final = {name: column for column, (name, _) in _COLUMNS.items()}


def _has_undecodable(text: str) -> bool:
    # surrogateescape maps each undecodable byte to a lone surrogate U+DC80..U+DCFF.
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _split_cells(text: str) -> list[str]:
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        raise _CellError(f"malformed CSV: {exc}") from None


def _parse_row(cells: list[str]) -> Customer:
    if len(cells) != len(HEADER):
        raise _CellError(f"expected {len(HEADER)} columns, found {len(cells)}")
    values: dict[str, object] = {}
    for column, cell in zip(HEADER, cells, strict=True):
        name, parse = _COLUMNS[column]
        if "\x00" in cell:
            raise _CellError(f"column {column!r}: contains a NUL byte")
        if _has_undecodable(cell):
            raise _CellError(f"column {column!r}: contains bytes that are not UTF-8")
        try:
            values[name] = parse(cell)
        except _CellError as exc:
            raise _CellError(f"column {column!r}: {exc}") from None
    if values["total_charges"] is None and values["tenure_months"] != 0:
        raise _CellError("column 'TotalCharges': blank, which is only legal when tenure is 0")
    try:
        return Customer.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        column = _COLUMN_OF_FIELD.get(str(first["loc"][0]), str(first["loc"][0]))
        raise _CellError(f"column {column!r}: {first['msg']}") from None


def _physical_lines(data: bytes) -> Iterable[tuple[int, str]]:
    # bytes.splitlines splits on \n, \r\n and \r only, so line numbers match an editor's.
    for number, raw in enumerate(data.splitlines(), start=1):
        yield number, raw.decode("utf-8", errors="surrogateescape")


def _check_header(path: str, first: str | None) -> None:
    if first is None:
        raise DataError(path, 1, "the file is empty; expected a header row")
    try:
        header = _split_cells(first.removeprefix("\ufeff"))
    except _CellError as exc:
        raise DataError(path, 1, f"header: {exc}") from None
    if tuple(header) != HEADER:
        wrong = [
            f"column {i + 1}: expected {want!r}, found {got!r}"
            for i, (want, got) in enumerate(zip(HEADER, header, strict=False))
            if want != got
        ]
        if len(header) != len(HEADER):
            wrong.append(f"expected {len(HEADER)} columns, found {len(header)}")
        raise DataError(path, 1, "header mismatch: " + "; ".join(wrong))


def load_customers(
    path: str | Path | None = None,
    *,
    subset: bool = False,
    limit: int | None = None,
    skip_bad_rows: bool = False,
) -> LoadResult:
    """Load and validate customers from a Telco CSV file.

    ``path=None`` reads the packaged file: all 7,043 rows, or the 100-row sample with
    ``subset=True``. ``limit`` stops after that many valid customers. A bad row raises
    ``DataError(path, line, message)`` naming the physical line and the column; with
    ``skip_bad_rows=True`` it is recorded in ``LoadResult.skipped`` instead. A bad header
    always raises: without it no row can be read.
    """
    if path is not None and subset:
        raise ConfigError("load_customers: pass either a path or subset=True, not both")
    if limit is not None and limit < 0:
        raise ConfigError(f"load_customers: limit must be >= 0, got {limit}")
    file = Path(path) if path is not None else data_file(SUBSET_CSV if subset else FULL_CSV)
    shown = str(file)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DataError(shown, 0, f"cannot read the file: {exc.strerror or exc}") from None

    lines = iter(_physical_lines(data))
    first = next(lines, None)
    _check_header(shown, first[1] if first else None)

    customers: list[Customer] = []
    skipped: list[tuple[int, str]] = []
    first_line_of: dict[str, int] = {}
    for number, text in lines:
        if limit is not None and len(customers) >= limit:
            break
        if not text.strip():
            continue
        try:
            customer = _parse_row(_split_cells(text))
            seen = first_line_of.setdefault(customer.customer_id, number)
            if seen != number:
                raise _CellError(
                    f"column 'customerID': duplicate {customer.customer_id!r} "
                    f"(first seen on line {seen})"
                )
        except _CellError as exc:
            if not skip_bad_rows:
                raise DataError(shown, number, str(exc)) from None
            skipped.append((number, str(exc)))
            continue
        customers.append(customer)
    return LoadResult(path=shown, customers=customers, skipped=skipped)


# --- the reference implementation's label heuristic (for comparison only) ---------------

REFERENCE_DISTRIBUTION: Final[Mapping[str, Mapping[HeuristicLabel, int]]] = {
    "subset": {
        "renewed": 44,
        "renewed_with_offer": 27,
        "churned": 23,
        "restructured": 4,
        "escalated": 2,
    },
    "full": {
        "renewed": 2858,
        "renewed_with_offer": 2053,
        "churned": 1655,
        "restructured": 263,
        "escalated": 214,
    },
}


def label_heuristic(customer: Customer) -> HeuristicLabel:
    """The reference implementation's precomputed path for a customer (SOURCES.md).

    Used only to compare a run's emergent outcomes with the reference in the final
    report; it never decides an outcome.
    """
    if customer.churn:
        return "churned" if customer.contract == "Month-to-month" else "escalated"
    if customer.monthly_charges > 95 and customer.contract == "Month-to-month":
        return "restructured"
    if customer.monthly_charges > 70:
        return "renewed_with_offer"
    return "renewed"


def heuristic_distribution(customers: Iterable[Customer]) -> dict[HeuristicLabel, int]:
    """How many customers the reference heuristic puts on each path."""
    return dict(Counter(label_heuristic(c) for c in customers))


__all__ = [
    "DATA_DIR",
    "FULL_CSV",
    "HEADER",
    "REFERENCE_DISTRIBUTION",
    "SUBSET_CSV",
    "Contract",
    "Customer",
    "HeuristicLabel",
    "LoadResult",
    "data_file",
    "heuristic_distribution",
    "label_heuristic",
    "load_customers",
]
