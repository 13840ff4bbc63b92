"""The packaged Telco data and its row-by-row validation."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threshold.apps.renewal.customers import (
    HEADER,
    REFERENCE_DISTRIBUTION,
    Customer,
    data_file,
    heuristic_distribution,
    label_heuristic,
    load_customers,
)
from threshold.errors import ConfigError, DataError

# sha256 of the files as published upstream (SOURCES.md): the copies must stay unchanged.
UPSTREAM_SHA256 = {
    "telco_customer_churn_full.csv": (
        "16320c9c1ec72448db59aa0a26a0b95401046bef5d02fd3aeb906448e3055e91"
    ),
    "telco_customer_churn_subset.csv": (
        "fca3899dfaddbdab4f4a9e0a5a1d5ee98455a31b166b6cc905e26f50614841bc"
    ),
    "policy.yaml": "30c404f8ff18f766f6aa42eed07a9bf07cd417e174dfe073f7d6ed553a5fbb59",
    "events.jsonl": "ea483cfe70a4b17429a6ad160a4c14db6b7836dfc74fdc5d089d2b3169f7e6b6",
    "renewals.csv": "cc3d7a23e00dc6254db745c5e4f351f93c5737b85ff695ff74e2dac20e10f47c",
}

GOOD_ROWS = [
    "7590-VHVEG,Female,0,Yes,No,1,No,No phone service,DSL,No,Yes,No,No,No,No,"
    "Month-to-month,Yes,Electronic check,29.85,29.85,No",
    "5575-GNVDE,Male,0,No,No,34,Yes,No,DSL,Yes,No,Yes,No,No,No,One year,No,"
    "Mailed check,56.95,1889.5,No",
    "3668-QPYBK,Male,0,No,No,2,Yes,No,DSL,Yes,Yes,No,No,No,No,Month-to-month,Yes,"
    "Mailed check,53.85,108.15,Yes",
]
MIDDLE = GOOD_ROWS[1]


def write_csv(tmp_path: Path, rows: list[str], *, header: str | None = None) -> Path:
    path = tmp_path / "customers.csv"
    text = "\n".join([header if header is not None else ",".join(HEADER), *rows]) + "\n"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


def with_middle_row(tmp_path: Path, bad: str | bytes) -> Path:
    """A file whose physical line 3 is ``bad``, between two good rows."""
    path = tmp_path / "customers.csv"
    raw = bad if isinstance(bad, bytes) else bad.encode()
    head = (",".join(HEADER) + "\n" + GOOD_ROWS[0] + "\n").encode()
    path.write_bytes(head + raw + b"\n" + GOOD_ROWS[2].encode() + b"\n")
    return path


@pytest.mark.parametrize("name", sorted(UPSTREAM_SHA256))
def test_packaged_files_are_unchanged_copies(name: str) -> None:
    """Every packaged data file is byte-for-byte the upstream file."""
    digest = hashlib.sha256(data_file(name).read_bytes()).hexdigest()
    assert digest == UPSTREAM_SHA256[name]


def test_packaged_sources_note_says_copied_unchanged() -> None:
    """The packaged SOURCES.md keeps its provenance and says the copy is unchanged."""
    text = data_file("SOURCES.md").read_text(encoding="utf-8")
    assert "vasundras/agent-runtime-patterns" in text
    assert "unchanged" in text.strip().splitlines()[-1]


def test_full_file_loads_every_customer() -> None:
    """The packaged full file yields 7,043 valid, distinct customers and skips nothing."""
    result = load_customers()
    assert len(result.customers) == 7043
    assert result.skipped == []
    assert len({c.customer_id for c in result.customers}) == 7043


def test_blank_total_charges_become_none_only_at_tenure_zero() -> None:
    """The 11 blank TotalCharges load as None, all on tenure-0 customers."""
    blanks = [c for c in load_customers().customers if c.total_charges is None]
    assert len(blanks) == 11
    assert {c.tenure_months for c in blanks} == {0}


def test_subset_loads_one_hundred_customers_from_the_full_file() -> None:
    """The packaged subset has 100 customers, each also present in the full file."""
    subset = load_customers(subset=True).customers
    full_ids = {c.customer_id for c in load_customers().customers}
    assert len(subset) == 100
    assert {c.customer_id for c in subset} <= full_ids


@pytest.mark.parametrize("which", ["subset", "full"])
def test_reference_heuristic_reproduces_published_distribution(which: str) -> None:
    """The heuristic over the packaged file gives exactly the distribution in SOURCES.md."""
    customers = load_customers(subset=which == "subset").customers
    assert heuristic_distribution(customers) == REFERENCE_DISTRIBUTION[which]


def test_label_heuristic_rules_in_order() -> None:
    """Churn decides first, then high month-to-month charges, then charges above 70."""
    row = load_customers(subset=True).customers[0]

    def variant(**changes: object) -> Customer:
        return row.model_copy(update=changes)

    assert label_heuristic(variant(churn=True, contract="Month-to-month")) == "churned"
    assert label_heuristic(variant(churn=True, contract="Two year")) == "escalated"
    mtm = variant(churn=False, contract="Month-to-month", monthly_charges=95.5)
    assert label_heuristic(mtm) == "restructured"
    assert label_heuristic(variant(churn=False, contract="One year", monthly_charges=95.5)) == (
        "renewed_with_offer"
    )
    assert label_heuristic(variant(churn=False, monthly_charges=70.0)) == "renewed"


def test_limit_stops_after_that_many_customers() -> None:
    """``limit`` returns the first N valid customers."""
    assert [c.customer_id for c in load_customers(limit=2).customers] == [
        c.customer_id for c in load_customers().customers[:2]
    ]


BAD_ROWS: list[tuple[str, str | bytes, str]] = [
    ("too few columns", MIDDLE.rsplit(",", 1)[0], "expected 21 columns, found 20"),
    ("too many columns", MIDDLE + ",extra", "expected 21 columns, found 22"),
    ("non-numeric charges", MIDDLE.replace("56.95", "abc"), "'MonthlyCharges'"),
    ("nan charges", MIDDLE.replace("56.95", "nan"), "'MonthlyCharges'"),
    ("zero charges", MIDDLE.replace("56.95", "0"), "'MonthlyCharges'"),
    ("unknown contract", MIDDLE.replace("One year", "Three year"), "'Contract'"),
    ("negative tenure", MIDDLE.replace(",34,", ",-34,"), "'tenure'"),
    ("fractional tenure", MIDDLE.replace(",34,", ",3.4,"), "'tenure'"),
    ("bad churn", MIDDLE[: -len("No")] + "Maybe", "'Churn'"),
    ("blank total at tenure 34", MIDDLE.replace("1889.5", " "), "'TotalCharges'"),
    ("duplicate id", GOOD_ROWS[0], "duplicate '7590-VHVEG' (first seen on line 2)"),
    ("NUL byte", MIDDLE.replace("Male", "Ma\x00le"), "'gender': contains a NUL byte"),
    ("non-UTF-8", MIDDLE.encode().replace(b"Male", b"M\xe4le"), "'gender': contains bytes"),
    ("stray quote", MIDDLE.replace("Male", '"Male'), "malformed CSV"),
]


@pytest.mark.parametrize(("case", "bad", "expected"), BAD_ROWS, ids=[c for c, _, _ in BAD_ROWS])
def test_bad_row_raises_data_error_naming_file_line_and_column(
    tmp_path: Path, case: str, bad: str | bytes, expected: str
) -> None:
    """A malformed row raises DataError with the file, its physical line and the problem."""
    path = with_middle_row(tmp_path, bad)
    with pytest.raises(DataError) as caught:
        load_customers(path)
    assert caught.value.path == str(path)
    assert caught.value.line == 3
    assert expected in caught.value.detail
    assert str(caught.value).startswith(f"{path}:3: ")


@pytest.mark.parametrize(("case", "bad", "expected"), BAD_ROWS, ids=[c for c, _, _ in BAD_ROWS])
def test_bad_row_is_skipped_and_counted_when_asked(
    tmp_path: Path, case: str, bad: str | bytes, expected: str
) -> None:
    """With skip_bad_rows the bad row is recorded with its line and the good rows load."""
    result = load_customers(with_middle_row(tmp_path, bad), skip_bad_rows=True)
    assert [c.customer_id for c in result.customers] == ["7590-VHVEG", "3668-QPYBK"]
    assert len(result.skipped) == 1
    assert result.skipped[0][0] == 3
    assert expected in result.skipped[0][1]


def test_header_mismatch_raises_even_when_skipping(tmp_path: Path) -> None:
    """A wrong header is fatal and names the first differing column."""
    header = ",".join(HEADER).replace("tenure", "Tenure")
    path = write_csv(tmp_path, GOOD_ROWS, header=header)
    with pytest.raises(DataError, match=r":1: header mismatch: column 6: expected 'tenure'"):
        load_customers(path, skip_bad_rows=True)


def test_empty_file_raises(tmp_path: Path) -> None:
    """An empty file is a DataError on line 1, not an empty result."""
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_customers(path)


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    """A UTF-8 BOM, CRLF line ends and blank lines do not shift or break parsing."""
    path = tmp_path / "excel.csv"
    text = "\ufeff" + ",".join(HEADER) + "\r\n" + GOOD_ROWS[0] + "\r\n\r\n" + GOOD_ROWS[1] + "\r\n"
    path.write_bytes(text.encode("utf-8"))
    assert len(load_customers(path).customers) == 2
    path.write_bytes(text.replace("Month-to-month", "Weekly").encode("utf-8"))
    with pytest.raises(DataError) as caught:
        load_customers(path)
    assert caught.value.line == 2


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    """A file that cannot be read raises DataError naming it."""
    with pytest.raises(DataError, match="cannot read"):
        load_customers(tmp_path / "absent.csv")


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    """A path with subset=True, a negative limit or an unknown data file are refused."""
    with pytest.raises(ConfigError):
        load_customers(tmp_path / "x.csv", subset=True)
    with pytest.raises(ConfigError):
        load_customers(limit=-1)
    with pytest.raises(ConfigError):
        data_file("../customers.py")


def test_customer_model_is_strict_and_frozen() -> None:
    """A Customer built in code gets the CSV's checks and cannot be mutated."""
    row = load_customers(subset=True).customers[0].model_dump()
    with pytest.raises(ValueError, match="senior_citizen"):
        Customer.model_validate({**row, "senior_citizen": "yes"})
    customer = Customer.model_validate(row)
    with pytest.raises(ValueError, match="frozen"):
        customer.churn = not customer.churn  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_in_a_row_load_or_raise_data_error(raw: bytes) -> None:
    """Arbitrary bytes as a data row load, raise DataError or are skipped; nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        path = with_middle_row(Path(tmp), raw)
        try:
            load_customers(path)
        except DataError as exc:
            assert exc.line >= 3
        result = load_customers(path, skip_bad_rows=True)
        assert len(result.customers) + len(result.skipped) >= 2
