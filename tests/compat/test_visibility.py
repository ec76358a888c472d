"""Who sees what: accounts, launch permissions (account, group all, organization),
public images, regions."""

import pytest
from botocore.exceptions import ClientError

from compat_helpers import KILN_OWNER_ID, SECONDARY, error_code


def _visible(ec2, image_id, **kwargs):
    resp = ec2.describe_images(Filters=[{"Name": "image-id", "Values": [image_id]}], **kwargs)
    return [i["ImageId"] for i in resp["Images"]]


def _grant(ec2, image_id, **perm):
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [perm]})


def test_describe_images_other_accounts_private_image_is_not_listed(ec2_b, register_image):
    image = register_image()

    assert _visible(ec2_b, image.image_id) == []


def test_describe_images_other_accounts_private_image_by_id_fails_with_not_found(
    ec2_b, register_image
):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_b.describe_images(ImageIds=[image.image_id])

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_describe_images_after_launch_permission_other_account_sees_image(
    ec2_a, ec2_b, register_image, account_a, account_b
):
    image = register_image()

    _grant(ec2_a, image.image_id, UserId=account_b.account_id)

    images = ec2_b.describe_images(ImageIds=[image.image_id])["Images"]
    assert [(i["ImageId"], i["OwnerId"], i["Public"]) for i in images] == [
        (image.image_id, account_a.account_id, False)
    ]


def test_describe_images_after_launch_permission_removed_other_account_no_longer_sees_image(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    _grant(ec2_a, image.image_id, UserId=account_b.account_id)

    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Remove": [{"UserId": account_b.account_id}]}
    )

    assert _visible(ec2_b, image.image_id) == []


def test_describe_images_launch_permission_for_b_does_not_show_image_to_c(
    ec2_a, ec2_c, register_image, account_b
):
    image = register_image()

    _grant(ec2_a, image.image_id, UserId=account_b.account_id)

    assert _visible(ec2_c, image.image_id) == []


def test_modify_image_attribute_shared_image_by_other_account_fails_with_auth_failure(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    _grant(ec2_a, image.image_id, UserId=account_b.account_id)

    with pytest.raises(ClientError) as e:
        ec2_b.modify_image_attribute(
            ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
        )

    assert error_code(e) == "AuthFailure"
    assert ec2_a.describe_images(ImageIds=[image.image_id])["Images"][0]["Public"] is False


def test_deregister_image_shared_image_by_other_account_dry_run_fails_with_unauthorized(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    _grant(ec2_a, image.image_id, UserId=account_b.account_id)

    with pytest.raises(ClientError) as e:
        ec2_b.deregister_image(ImageId=image.image_id, DryRun=True)

    assert error_code(e) == "UnauthorizedOperation"


def test_describe_images_public_image_is_visible_to_every_account(
    ec2_a, ec2_b, ec2_c, register_image
):
    image = register_image()

    _grant(ec2_a, image.image_id, Group="all")

    assert _visible(ec2_b, image.image_id) == [image.image_id]
    assert _visible(ec2_c, image.image_id) == [image.image_id]
    assert ec2_b.describe_images(ImageIds=[image.image_id])["Images"][0]["Public"] is True


def test_describe_images_organization_launch_permission_shows_image_to_members_only(
    ec2_a, ec2_b, ec2_c, register_image, org_arn
):
    image = register_image()

    _grant(ec2_a, image.image_id, OrganizationArn=org_arn)

    assert _visible(ec2_c, image.image_id) == [image.image_id]
    assert _visible(ec2_b, image.image_id) == []


def test_describe_images_organization_launch_permission_shows_image_to_every_member(
    ec2_a, ec2_d, register_image, org_arn
):
    image = register_image()

    _grant(ec2_a, image.image_id, OrganizationArn=org_arn)

    assert _visible(ec2_d, image.image_id) == [image.image_id]


def test_describe_images_organizational_unit_launch_permission_shows_image_to_ou_members_only(
    ec2_a, ec2_c, ec2_d, register_image, ou_arn
):
    image = register_image()

    _grant(ec2_a, image.image_id, OrganizationalUnitArn=ou_arn)

    assert _visible(ec2_d, image.image_id) == [image.image_id]
    assert _visible(ec2_c, image.image_id) == []
    perms = ec2_a.describe_image_attribute(ImageId=image.image_id, Attribute="launchPermission")
    assert perms["LaunchPermissions"] == [{"OrganizationalUnitArn": ou_arn}]


def test_describe_images_executable_users_self_includes_organization_shares(
    ec2_a, ec2_c, register_image, org_arn
):
    image = register_image()
    _grant(ec2_a, image.image_id, OrganizationArn=org_arn)

    ids = _visible(ec2_c, image.image_id, ExecutableUsers=["self"])

    assert ids == [image.image_id]


def test_describe_images_kiln_public_image_is_visible_to_all_accounts(
    ec2_a, ec2_b, ec2_kiln, register_image, account_kiln
):
    image = register_image(account=account_kiln)

    _grant(ec2_kiln, image.image_id, Group="all")

    assert _visible(ec2_a, image.image_id) == [image.image_id]
    shown = ec2_b.describe_images(ImageIds=[image.image_id])["Images"][0]
    assert (shown["OwnerId"], shown.get("ImageOwnerAlias")) == (KILN_OWNER_ID, "kiln")


def test_describe_images_image_of_other_region_is_not_listed(ec2_a, register_image):
    image = register_image(region=SECONDARY)

    assert _visible(ec2_a, image.image_id) == []


def test_describe_images_image_of_other_region_by_id_fails_with_not_found(
    ec2_a, register_image
):
    image = register_image(region=SECONDARY)

    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(ImageIds=[image.image_id])

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_describe_images_public_image_in_one_region_is_not_listed_in_another(
    ec2_a, ec2_b_west, register_image
):
    image = register_image()
    _grant(ec2_a, image.image_id, Group="all")

    assert _visible(ec2_b_west, image.image_id) == []


def test_describe_images_shared_in_second_region_is_visible_there_to_other_account(
    ec2_a_west, ec2_b_west, register_image, account_b
):
    image = register_image(region=SECONDARY)

    _grant(ec2_a_west, image.image_id, UserId=account_b.account_id)

    assert _visible(ec2_b_west, image.image_id) == [image.image_id]


def test_describe_images_shared_image_owner_tags_are_not_shown_to_other_account(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image(tags={"secret": "owner-only"})

    _grant(ec2_a, image.image_id, UserId=account_b.account_id)

    shown = ec2_b.describe_images(ImageIds=[image.image_id])["Images"][0]
    assert shown.get("Tags", []) == []
