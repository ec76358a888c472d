"""Enable/Disable/GetImageBlockPublicAccessState. Runs in eu-west-1 so that the
account-level setting never disturbs tests in other regions; each test leaves it off."""

import pytest
from botocore.exceptions import ClientError

from compat_helpers import error_code

REGION = "eu-west-1"


@pytest.fixture
def ec2_eu(client, account_a):
    ec2 = client("ec2", account_a, REGION)
    yield ec2
    ec2.disable_image_block_public_access()


@pytest.fixture
def blocked(ec2_eu):
    ec2_eu.enable_image_block_public_access(ImageBlockPublicAccessState="block-new-sharing")
    return ec2_eu


def _public(ec2, image_id):
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]["Public"]


def test_enable_image_block_public_access_returns_block_new_sharing(ec2_eu):
    resp = ec2_eu.enable_image_block_public_access(ImageBlockPublicAccessState="block-new-sharing")

    assert resp["ImageBlockPublicAccessState"] == "block-new-sharing"


def test_get_image_block_public_access_state_after_enable_returns_block_new_sharing(blocked):
    assert blocked.get_image_block_public_access_state()["ImageBlockPublicAccessState"] == (
        "block-new-sharing"
    )


def test_disable_image_block_public_access_returns_unblocked(blocked):
    resp = blocked.disable_image_block_public_access()

    assert resp["ImageBlockPublicAccessState"] == "unblocked"
    assert blocked.get_image_block_public_access_state()["ImageBlockPublicAccessState"] == (
        "unblocked"
    )


def test_modify_image_attribute_group_all_while_blocked_fails_with_operation_not_permitted(
    blocked, register_image, account_a
):
    image = register_image(region=REGION)

    with pytest.raises(ClientError) as e:
        blocked.modify_image_attribute(
            ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
        )

    assert error_code(e) == "OperationNotPermitted"
    assert _public(blocked, image.image_id) is False


def test_modify_image_attribute_user_groups_all_while_blocked_fails_with_operation_not_permitted(
    blocked, register_image
):
    image = register_image(region=REGION)

    with pytest.raises(ClientError) as e:
        blocked.modify_image_attribute(
            ImageId=image.image_id, Attribute="launchPermission", OperationType="add",
            UserGroups=["all"],
        )

    assert error_code(e) == "OperationNotPermitted"


def test_modify_image_attribute_share_with_account_while_blocked_succeeds(
    blocked, register_image, account_b
):
    image = register_image(region=REGION)

    blocked.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    perms = blocked.describe_image_attribute(ImageId=image.image_id, Attribute="launchPermission")
    assert perms["LaunchPermissions"] == [{"UserId": account_b.account_id}]


def test_enable_image_block_public_access_keeps_already_public_images_public(
    ec2_eu, register_image
):
    image = register_image(region=REGION)
    ec2_eu.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    ec2_eu.enable_image_block_public_access(ImageBlockPublicAccessState="block-new-sharing")

    assert _public(ec2_eu, image.image_id) is True


def test_modify_image_attribute_group_all_after_disable_succeeds(blocked, register_image):
    image = register_image(region=REGION)
    blocked.disable_image_block_public_access()

    blocked.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    assert _public(blocked, image.image_id) is True


def test_enable_image_block_public_access_does_not_affect_other_accounts(
    blocked, client, account_b, register_image
):
    ec2_b_eu = client("ec2", account_b, REGION)
    image = register_image(account=account_b, region=REGION)

    ec2_b_eu.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    assert _public(ec2_b_eu, image.image_id) is True


def test_enable_image_block_public_access_does_not_affect_other_regions(
    blocked, ec2_a_west, register_image
):
    image = register_image(region="us-west-2")

    ec2_a_west.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    assert _public(ec2_a_west, image.image_id) is True
