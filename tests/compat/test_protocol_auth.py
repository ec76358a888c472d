"""Query protocol and SigV4: GET and POST, presigned URLs, UNSIGNED-PAYLOAD,
wrong secrets, unknown keys, clock skew, unknown actions, error XML."""

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from compat_helpers import EC2_XMLNS, Account, error_code, http_send, tags_of, unique

NS = "{" + EC2_XMLNS + "}"


def _error_xml_code(body: str) -> str:
    root = ET.fromstring(body)
    assert root.tag == "Response", body
    assert root.find("RequestID") is not None, body
    return root.find("Errors/Error/Code").text


def test_post_describe_regions_signed_returns_response_root_with_request_id(raw_ec2):
    resp = raw_ec2({"Action": "DescribeRegions", "Version": "2016-11-15"})

    assert resp.status == 200, resp.body
    root = ET.fromstring(resp.body)
    assert root.tag == NS + "DescribeRegionsResponse"
    assert root.find(NS + "requestId").text
    assert root.find(NS + "regionInfo/" + NS + "item/" + NS + "regionName") is not None


def test_get_describe_images_query_string_returns_images_response(raw_ec2):
    resp = raw_ec2(
        {"Action": "DescribeImages", "Version": "2016-11-15", "Owner.1": "self"}, method="GET"
    )

    assert resp.status == 200, resp.body
    root = ET.fromstring(resp.body)
    assert root.tag == NS + "DescribeImagesResponse"
    assert root.find(NS + "requestId").text


def test_post_unsigned_payload_is_accepted(raw_ec2):
    resp = raw_ec2({"Action": "DescribeRegions", "Version": "2016-11-15"}, unsigned_payload=True)

    assert resp.status == 200, resp.body
    assert ET.fromstring(resp.body).tag == NS + "DescribeRegionsResponse"


def test_presigned_get_url_from_botocore_is_accepted(ec2_a):
    url = ec2_a.generate_presigned_url(
        "describe_regions", Params={"RegionNames": ["us-east-1"]}, HttpMethod="GET"
    )

    resp = http_send(url, "GET", {}, None)

    assert "X-Amz-Signature=" in url
    assert resp.status == 200, resp.body
    assert ET.fromstring(resp.body).tag == NS + "DescribeRegionsResponse"


def test_presigned_get_url_with_tampered_signature_fails_with_auth_error(ec2_a):
    url = ec2_a.generate_presigned_url("describe_regions", Params={}, HttpMethod="GET")
    head, sig = url.split("X-Amz-Signature=")
    tampered = head + "X-Amz-Signature=" + ("0" if sig[0] != "0" else "1") + sig[1:]

    resp = http_send(tampered, "GET", {}, None)

    assert resp.status >= 400
    assert _error_xml_code(resp.body) in {"SignatureDoesNotMatch", "AuthFailure"}


def test_any_action_unknown_action_fails_with_invalid_action(raw_ec2):
    resp = raw_ec2({"Action": "LaunchRocket", "Version": "2016-11-15"})

    assert resp.status == 400, resp.body
    assert _error_xml_code(resp.body) == "InvalidAction"


def test_any_action_wrong_secret_fails_with_signature_does_not_match(client, account_a):
    wrong = Account("wrong", account_a.account_id, account_a.access_key_id, "x" * 40)
    ec2 = client("ec2", wrong)

    with pytest.raises(ClientError) as e:
        ec2.describe_images(Owners=["self"])

    assert error_code(e) in {"SignatureDoesNotMatch", "AuthFailure"}


def test_any_action_unknown_access_key_fails_with_auth_failure(client, account_a):
    stranger = Account("stranger", "999999999999", "AKIAKILNUNKNOWN00001", "y" * 40)
    ec2 = client("ec2", stranger)

    with pytest.raises(ClientError) as e:
        ec2.describe_regions()

    assert error_code(e) == "AuthFailure"


def test_any_action_timestamp_ten_minutes_old_fails_with_request_expired(raw_ec2):
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)

    resp = raw_ec2({"Action": "DescribeRegions", "Version": "2016-11-15"}, when=when)

    assert resp.status >= 400
    assert _error_xml_code(resp.body) == "RequestExpired"


def test_any_action_timestamp_ten_minutes_ahead_fails_with_request_expired(raw_ec2):
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)

    resp = raw_ec2({"Action": "DescribeRegions", "Version": "2016-11-15"}, when=when)

    assert resp.status >= 400
    assert _error_xml_code(resp.body) == "RequestExpired"


def test_create_tags_wrong_secret_changes_nothing(raw_ec2, register_image, describe_image):
    image = register_image()

    resp = raw_ec2(
        {
            "Action": "CreateTags",
            "Version": "2016-11-15",
            "ResourceId.1": image.image_id,
            "Tag.1.Key": "intruder",
            "Tag.1.Value": "yes",
        },
        secret="z" * 40,
    )

    assert resp.status >= 400
    assert _error_xml_code(resp.body) in {"SignatureDoesNotMatch", "AuthFailure"}
    assert "intruder" not in tags_of(describe_image(image.image_id))


def test_create_tags_without_authorization_changes_nothing(kiln, register_image, describe_image):
    image = register_image()
    body = (
        f"Action=CreateTags&Version=2016-11-15&ResourceId.1={image.image_id}"
        "&Tag.1.Key=anonymous&Tag.1.Value=yes"
    ).encode()

    resp = http_send(
        kiln.url + "/",
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        body,
    )

    assert resp.status >= 400
    assert _error_xml_code(resp.body) in {"AuthFailure", "MissingAuthenticationToken"}
    assert "anonymous" not in tags_of(describe_image(image.image_id))


def test_register_image_missing_name_fails_with_missing_parameter(client, account_a, make_snapshot):
    ec2 = client("ec2", account_a, parameter_validation=False)
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2.register_image(
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
        )

    assert error_code(e) == "MissingParameter"


def test_deregister_image_missing_image_id_fails_with_missing_parameter(client, account_a):
    ec2 = client("ec2", account_a, parameter_validation=False)

    with pytest.raises(ClientError) as e:
        ec2.deregister_image()

    assert error_code(e) == "MissingParameter"


def test_create_tags_missing_resources_fails_with_missing_parameter(client, account_a):
    ec2 = client("ec2", account_a, parameter_validation=False)

    with pytest.raises(ClientError) as e:
        ec2.create_tags(Tags=[{"Key": "k", "Value": "v"}])

    assert error_code(e) == "MissingParameter"


def test_register_image_unknown_architecture_fails_with_invalid_parameter_value(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=unique("bad-arch"),
            Architecture="sparc64",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
        )

    assert error_code(e) == "InvalidParameterValue"


def test_register_image_unknown_boot_mode_fails_with_invalid_parameter_value(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=unique("bad-boot"),
            BootMode="coreboot",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
        )

    assert error_code(e) == "InvalidParameterValue"


def test_describe_images_non_numeric_max_results_fails_with_invalid_parameter_value(raw_ec2):
    resp = raw_ec2(
        {"Action": "DescribeImages", "Version": "2016-11-15", "Owner.1": "self", "MaxResults": "many"}
    )

    assert resp.status == 400, resp.body
    assert _error_xml_code(resp.body) == "InvalidParameterValue"
