"""IncludeDeprecated: deprecated images are hidden from non-owners unless asked for.

Uses the session fixture `deprecating_image` (conftest.py), whose deprecation time is the
next whole minute after session start; AWS forbids deprecation times in the past. This
file is named to run last so that the time has usually passed and nothing waits."""

from compat_helpers import parse_time


def _by_name(ec2, name, **kwargs):
    return ec2.describe_images(Filters=[{"Name": "name", "Values": [name]}], **kwargs)["Images"]


def test_describe_images_deprecated_shared_image_hidden_from_non_owner_by_default(
    ec2_b, deprecating_image, account_a
):
    assert deprecating_image.error is None
    deprecating_image.wait_until_deprecated()

    images = _by_name(ec2_b, deprecating_image.name, Owners=[account_a.account_id])

    assert images == []


def test_describe_images_include_deprecated_shows_deprecated_image_to_non_owner(
    ec2_b, deprecating_image, account_a
):
    assert deprecating_image.error is None
    deprecating_image.wait_until_deprecated()

    images = _by_name(
        ec2_b, deprecating_image.name, Owners=[account_a.account_id], IncludeDeprecated=True
    )

    assert [i["ImageId"] for i in images] == [deprecating_image.image_id]
    assert parse_time(images[0]["DeprecationTime"]) == deprecating_image.deprecate_at


def test_describe_images_deprecated_image_always_shown_to_owner(ec2_a, deprecating_image):
    assert deprecating_image.error is None
    deprecating_image.wait_until_deprecated()

    images = _by_name(ec2_a, deprecating_image.name, Owners=["self"])

    assert [i["ImageId"] for i in images] == [deprecating_image.image_id]
