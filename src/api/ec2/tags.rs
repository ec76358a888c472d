//! Tag actions: parameters in, XML out.

use super::Call;
use crate::error::Result;
use crate::service::tags::TagToDelete;

/// CreateTags.
pub fn create_tags(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    call.service
        .create_tags(call.ctx, &p.list("ResourceId")?, &p.tags("Tag")?)?;
    Ok(call.return_true())
}

/// DeleteTags.
pub fn delete_tags(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let tags: Vec<TagToDelete> = p
        .structs("Tag")?
        .into_iter()
        .filter_map(|t| {
            t.get("Key").map(|k| TagToDelete {
                key: k.to_string(),
                value: t.string("Value"),
            })
        })
        .collect();
    call.service
        .delete_tags(call.ctx, &p.list("ResourceId")?, &tags)?;
    Ok(call.return_true())
}

/// DescribeTags.
pub fn describe_tags(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let (rows, next_token) = call.service.describe_tags(
        call.ctx,
        &p.filters()?,
        p.int("MaxResults")?,
        p.get("NextToken"),
    )?;
    let mut w = call.response();
    w.open("tagSet");
    for row in rows {
        w.open("item")
            .leaf("resourceId", &row.resource_id)
            .leaf("resourceType", row.resource_type)
            .leaf("key", &row.key)
            .leaf("value", &row.value)
            .close("item");
    }
    w.close("tagSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}
