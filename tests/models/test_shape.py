"""``Shape``: the one type for a feature map's contract, and its on-disk form (plain mappings, as before)."""

import pytest
import torch

from yolostitch.models import ConfigError, Shape
from yolostitch.models.shape import contract_records, describe_contract, read_contract


def test_record_round_trip_is_plain_types():
    shape = Shape(64, 8)
    assert shape.record() == {"channels": 64, "stride": 8} and Shape.from_record(shape.record()) == shape
    assert Shape.from_record(shape) is shape
    contract = {"p4": Shape(256, 16), "p3": Shape(128, 8)}
    records = contract_records(contract)
    assert list(records) == ["p4", "p3"] and read_contract(records) == contract  # order kept
    assert contract_records(records) == records and describe_contract(contract) == "p4 256ch/s16, p3 128ch/s8"


def test_records_survive_a_weights_only_checkpoint(tmp_path):
    torch.save({"contract": contract_records({"p3": Shape(128, 8)})}, tmp_path / "c.pt")
    assert read_contract(torch.load(tmp_path / "c.pt", weights_only=True)["contract"]) == {"p3": Shape(128, 8)}


@pytest.mark.parametrize("value,message", [
    ({"channels": 8}, r"expected \{'channels': C, 'stride': s\}"),
    ({"channels": 8, "stride": True}, "stride must be a positive integer, got True"),
    ({"channels": 0, "stride": 8}, "channels must be a positive integer, got 0"),
    ({"channels": "8", "stride": 8}, "channels must be a positive integer, got '8'"),
    ([8, 8], r"expected \{'channels'"),
])
def test_bad_records_name_where_they_came_from(value, message):
    with pytest.raises(ConfigError, match=f"my.yaml: map 'p3': {message}"):
        read_contract({"p3": value}, "my.yaml")
    with pytest.raises(ConfigError, match="expected a mapping of feature maps, got list"):
        read_contract([value], "my.yaml")
