"""DescribeInstanceTypes: the t2, t3, m5 and c5 families with their real vCPUs and memory,
filters, pagination, and the errors AWS gives for unknown types and bad page sizes."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from compat_helpers import error_code


def test_describe_instance_types_named_returns_vcpus_and_memory(ec2_a):
    out = ec2_a.describe_instance_types(InstanceTypes=["t3.micro", "m5.large", "c5.xlarge"])

    got = {
        t["InstanceType"]: (t["VCpuInfo"]["DefaultVCpus"], t["MemoryInfo"]["SizeInMiB"])
        for t in out["InstanceTypes"]
    }
    assert got == {"t3.micro": (2, 1024), "m5.large": (2, 8192), "c5.xlarge": (4, 8192)}


def test_describe_instance_types_t3_is_burstable_nitro_x86_64(ec2_a):
    t = ec2_a.describe_instance_types(InstanceTypes=["t3.small"])["InstanceTypes"][0]

    assert t["BurstablePerformanceSupported"] is True
    assert t["Hypervisor"] == "nitro"
    assert t["ProcessorInfo"]["SupportedArchitectures"] == ["x86_64"]
    assert t["VCpuInfo"]["DefaultCores"] == 1
    assert t["VCpuInfo"]["DefaultThreadsPerCore"] == 2
    assert t["SupportedRootDeviceTypes"] == ["ebs"]
    assert "hvm" in t["SupportedVirtualizationTypes"]


def test_describe_instance_types_unknown_type_fails_invalid_instance_type(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_instance_types(InstanceTypes=["t3.micro", "t9.enormous"])

    assert error_code(e) == "InvalidInstanceType"
    assert "t9.enormous" in e.value.response["Error"]["Message"]


def test_describe_instance_types_max_results_above_100_fails_invalid_parameter_value(ec2_a):
    # botocore itself refuses values below 5, so only the upper bound reaches the server.
    with pytest.raises(ClientError) as e:
        ec2_a.describe_instance_types(MaxResults=101)

    assert error_code(e) == "InvalidParameterValue"


def test_describe_instance_types_pages_of_five_list_every_type_once(ec2_a):
    everything = [t["InstanceType"] for t in ec2_a.describe_instance_types()["InstanceTypes"]]
    walked, token, pages = [], None, 0
    while True:
        kwargs = {"MaxResults": 5, **({"NextToken": token} if token else {})}
        page = ec2_a.describe_instance_types(**kwargs)
        walked += [t["InstanceType"] for t in page["InstanceTypes"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break

    assert sorted(walked) == sorted(everything)
    assert len(walked) == len(set(walked))
    assert pages == -(-len(everything) // 5)
    assert {"t2.micro", "t3.micro", "m5.large", "c5.large"} <= set(everything)


def test_describe_instance_types_vcpu_filter_returns_only_matching_types(ec2_a):
    out = ec2_a.describe_instance_types(
        Filters=[
            {"Name": "vcpu-info.default-vcpus", "Values": ["96"]},
            {"Name": "instance-type", "Values": ["m5.*", "c5.*"]},
        ]
    )

    assert sorted(t["InstanceType"] for t in out["InstanceTypes"]) == [
        "c5.24xlarge",
        "m5.24xlarge",
    ]


def test_describe_instance_types_free_tier_filter_returns_micro_types(ec2_a):
    out = ec2_a.describe_instance_types(
        Filters=[{"Name": "free-tier-eligible", "Values": ["true"]}]
    )

    assert sorted(t["InstanceType"] for t in out["InstanceTypes"]) == ["t2.micro", "t3.micro"]


def test_describe_instance_types_unknown_filter_fails_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_instance_types(Filters=[{"Name": "colour", "Values": ["blue"]}])

    assert error_code(e) == "InvalidParameterValue"


def test_aws_cli_describe_instance_types_query_memory_returns_number(aws_cli):
    out = aws_cli(
        "ec2",
        "describe-instance-types",
        "--instance-types",
        "t2.micro",
        "--query",
        "InstanceTypes[0].MemoryInfo.SizeInMiB",
        profile=True,
    )

    assert out == 1024
