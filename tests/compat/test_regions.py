"""DescribeRegions and DescribeAvailabilityZones."""

import pytest
from botocore.exceptions import ClientError

from compat_helpers import REGIONS, error_code


def test_describe_regions_no_arguments_lists_configured_regions(ec2_a):
    regions = ec2_a.describe_regions()["Regions"]

    assert sorted(r["RegionName"] for r in regions) == sorted(REGIONS)


def test_describe_regions_from_second_account_and_region_lists_same_regions(ec2_b_west):
    regions = ec2_b_west.describe_regions()["Regions"]

    assert sorted(r["RegionName"] for r in regions) == sorted(REGIONS)


def test_describe_regions_region_names_returns_only_named(ec2_a):
    regions = ec2_a.describe_regions(RegionNames=["us-west-2"])["Regions"]

    assert [r["RegionName"] for r in regions] == ["us-west-2"]


def test_describe_regions_region_name_filter_returns_matching(ec2_a):
    regions = ec2_a.describe_regions(
        Filters=[{"Name": "region-name", "Values": ["eu-west-1", "us-east-1"]}]
    )["Regions"]

    assert sorted(r["RegionName"] for r in regions) == ["eu-west-1", "us-east-1"]


def test_describe_regions_region_name_wildcard_filter_returns_matching(ec2_a):
    regions = ec2_a.describe_regions(Filters=[{"Name": "region-name", "Values": ["us-*"]}])[
        "Regions"
    ]

    assert sorted(r["RegionName"] for r in regions) == ["us-east-1", "us-west-2"]


def test_describe_availability_zones_in_us_east_1_lists_zones_of_that_region(ec2_a):
    zones = ec2_a.describe_availability_zones()["AvailabilityZones"]

    assert zones
    assert {z["RegionName"] for z in zones} == {"us-east-1"}
    assert all(z["ZoneName"].startswith("us-east-1") for z in zones)
    assert {z["State"] for z in zones} == {"available"}


def test_describe_availability_zones_in_us_west_2_lists_zones_of_that_region(ec2_a_west):
    zones = ec2_a_west.describe_availability_zones()["AvailabilityZones"]

    assert zones
    assert {z["RegionName"] for z in zones} == {"us-west-2"}
    assert all(z["ZoneName"].startswith("us-west-2") for z in zones)


def test_describe_availability_zones_zone_names_returns_only_named(ec2_a):
    first = ec2_a.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]

    zones = ec2_a.describe_availability_zones(ZoneNames=[first])["AvailabilityZones"]

    assert [z["ZoneName"] for z in zones] == [first]


def test_describe_availability_zones_zone_name_filter_returns_matching(ec2_a):
    first = ec2_a.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]

    zones = ec2_a.describe_availability_zones(
        Filters=[{"Name": "zone-name", "Values": [first]}]
    )["AvailabilityZones"]

    assert [z["ZoneName"] for z in zones] == [first]


def test_any_request_region_not_served_fails_with_auth_failure(client, account_a):
    ec2 = client("ec2", account_a, "ap-southeast-2")

    with pytest.raises(ClientError) as e:
        ec2.describe_regions()

    assert error_code(e) == "AuthFailure"
